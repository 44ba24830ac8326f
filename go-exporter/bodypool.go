package main

// A pool of the big buffers (record batch bodies) the Arrow readers free:
// those of streams and of files that could not be mapped (a mapped file's
// bodies are slices of the mapping) and decompressed buffers.

import (
	"sync"

	"github.com/apache/arrow-go/v18/arrow/memory"
)

// bodyPool keeps up to maxSpare freed buffers of at least bigBuffer bytes
// (record batch bodies) and hands them out again, zeroed: the Go allocator
// would leave the freed bodies to the garbage collector, and new ones of
// other sizes make the heap, and so the RSS, grow to several times the few
// batches in flight. Smaller buffers go straight to mem. release gives the
// spare buffers back at the end.
type bodyPool struct {
	mem memory.Allocator

	mu    sync.Mutex
	big   map[*byte][]byte // big buffers handed out: first byte -> whole buffer
	spare [][]byte
}

const (
	bigBuffer = 1 << 20
	maxSpare  = 3
)

func (a *bodyPool) Allocate(size int) []byte {
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
func (a *bodyPool) whole(b []byte) ([]byte, bool) {
	if len(b) == 0 || cap(b) < bigBuffer {
		return nil, false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	buf, ok := a.big[&b[0]]
	return buf, ok
}

func (a *bodyPool) Reallocate(size int, b []byte) []byte {
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

func (a *bodyPool) Free(b []byte) {
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
func (a *bodyPool) release() {
	a.mu.Lock()
	spare := a.spare
	a.spare = nil
	a.mu.Unlock()
	for _, buf := range spare {
		a.mem.Free(buf)
	}
}
