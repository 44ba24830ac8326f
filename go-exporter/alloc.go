package main

// The allocator of the Arrow readers: a limit on single allocations and a
// pool of record batch bodies.

import (
	"errors"
	"fmt"
	"sync"

	"github.com/apache/arrow-go/v18/arrow/memory"
)

// errAllocLimit is the panic value of a limitAllocator asked for too much.
var errAllocLimit = errors.New("allocation over the limit")

// limitAllocator refuses single allocations over max bytes, so that a
// hostile file cannot make the reader allocate huge buffers (the IPC
// readers trust the sizes written in the file, e.g. the uncompressed size of
// a compressed buffer or a stream message's body length).
//
// It also keeps up to maxSpare freed buffers of at least bigBuffer bytes
// (record batch bodies) and hands them out again, zeroed: the Go allocator
// would leave the freed bodies to the garbage collector, and new ones of
// other sizes make the heap, and so the RSS, grow to several times the few
// batches in flight. release gives the spare buffers back at the end.
type limitAllocator struct {
	mem memory.Allocator
	max int64

	mu    sync.Mutex
	big   map[*byte][]byte // big buffers handed out: first byte -> whole buffer
	spare [][]byte
}

const (
	bigBuffer = 1 << 20
	maxSpare  = 3
)

func (a *limitAllocator) check(size int) {
	if int64(size) > a.max || size < 0 {
		panic(fmt.Errorf("%w: a buffer of %d bytes, more than %d (see -max-buffer)", errAllocLimit, size, a.max))
	}
}

func (a *limitAllocator) Allocate(size int) []byte {
	a.check(size)
	if size < bigBuffer {
		return a.mem.Allocate(size)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	best := -1
	for i, buf := range a.spare {
		if len(buf) >= size && (best < 0 || len(buf) < len(a.spare[best])) {
			best = i
		}
	}
	var buf []byte
	if best >= 0 {
		buf = a.spare[best]
		a.spare = append(a.spare[:best], a.spare[best+1:]...)
		clear(buf[:size])
	} else {
		// rounded up, so that batches of slightly different sizes fit
		buf = a.mem.Allocate((size + bigBuffer - 1) / bigBuffer * bigBuffer)
	}
	if a.big == nil {
		a.big = map[*byte][]byte{}
	}
	a.big[&buf[0]] = buf
	return buf[:size]
}

// whole returns the big buffer that b starts, if it is one.
func (a *limitAllocator) whole(b []byte) ([]byte, bool) {
	if len(b) == 0 || cap(b) < bigBuffer {
		return nil, false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	buf, ok := a.big[&b[0]]
	return buf, ok
}

func (a *limitAllocator) Reallocate(size int, b []byte) []byte {
	a.check(size)
	if buf, ok := a.whole(b); ok && size <= len(buf) && size > 0 {
		nb := buf[:size]
		if size > len(b) {
			clear(nb[len(b):])
		}
		return nb
	}
	if size < bigBuffer {
		if _, ok := a.whole(b); !ok {
			return a.mem.Reallocate(size, b)
		}
	}
	nb := a.Allocate(size)
	copy(nb, b)
	a.Free(b)
	return nb
}

func (a *limitAllocator) Free(b []byte) {
	buf, ok := a.whole(b)
	if !ok {
		a.mem.Free(b)
		return
	}
	a.mu.Lock()
	delete(a.big, &b[0])
	if len(a.spare) < maxSpare {
		a.spare = append(a.spare, buf)
		buf = nil
	}
	a.mu.Unlock()
	if buf != nil {
		a.mem.Free(buf)
	}
}

// release gives the spare buffers back to the underlying allocator.
func (a *limitAllocator) release() {
	a.mu.Lock()
	spare := a.spare
	a.spare = nil
	a.mu.Unlock()
	for _, buf := range spare {
		a.mem.Free(buf)
	}
}
