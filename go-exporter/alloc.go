package main

// The limit on what the Arrow readers may allocate at once.

import (
	"errors"
	"fmt"

	"github.com/apache/arrow-go/v18/arrow/memory"
)

// errAllocLimit is the panic value of a limitAllocator asked for too much.
var errAllocLimit = errors.New("allocation over the limit")

// limitAllocator refuses single allocations over max bytes, so that a
// hostile file cannot make the reader allocate huge buffers (the IPC
// readers trust the sizes written in the file, e.g. the uncompressed size of
// a compressed buffer or a stream message's body length).
type limitAllocator struct {
	mem memory.Allocator
	max int64
}

func (a *limitAllocator) check(size int) {
	if int64(size) > a.max || size < 0 {
		panic(fmt.Errorf("%w: a buffer of %d bytes, more than %d (see -max-buffer)", errAllocLimit, size, a.max))
	}
}

func (a *limitAllocator) Allocate(size int) []byte {
	a.check(size)
	return a.mem.Allocate(size)
}

func (a *limitAllocator) Reallocate(size int, b []byte) []byte {
	a.check(size)
	return a.mem.Reallocate(size, b)
}

func (a *limitAllocator) Free(b []byte) { a.mem.Free(b) }
