//go:build !unix

package main

import (
	"errors"
	"os"
)

const canMap = false

// mapFile fails where there is no mmap: the file is read instead.
func mapFile(*os.File, int64) ([]byte, error) { return nil, errors.New("no mmap here") }

func unmapFile([]byte) {}

func dropPages([]byte, int64, int64) {}
