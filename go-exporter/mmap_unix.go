//go:build unix

package main

// Input files mapped into memory, on the systems that can.

import (
	"errors"
	"os"
	"syscall"
)

// canMap says whether input files are mapped here.
const canMap = true

// mapFile maps the size bytes of f read-only (see ipcInput.mapped).
func mapFile(f *os.File, size int64) ([]byte, error) {
	if size <= 0 || int64(int(size)) != size {
		return nil, errors.New("cannot map a file of this size")
	}
	return syscall.Mmap(int(f.Fd()), 0, int(size), syscall.PROT_READ, syscall.MAP_SHARED)
}

func unmapFile(b []byte) { syscall.Munmap(b) }

// dropPages lets the kernel take the whole pages of mapped[from:to] out of
// this process (mapped starts a page): they stay in the page cache and are
// read again if touched, so the resident memory holds the batches in
// flight, not the whole file.
func dropPages(mapped []byte, from, to int64) {
	page := int64(os.Getpagesize())
	from = (from + page - 1) / page * page
	to = min(to, int64(len(mapped))) / page * page
	if from < to {
		syscall.Madvise(mapped[from:to], syscall.MADV_DONTNEED)
	}
}
