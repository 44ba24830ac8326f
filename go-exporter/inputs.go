package main

// The inputs: folders expanded to their Arrow files, each opened as an IPC
// file or stream.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// expandInputs replaces each folder by its *.arrow and *.arrows files in
// name order.
func expandInputs(inputs []string) ([]string, error) {
	var files []string
	for _, in := range inputs {
		st, err := os.Stat(in)
		if err != nil {
			return nil, pathError(in, err)
		}
		if !st.IsDir() {
			files = append(files, in)
			continue
		}
		entries, err := os.ReadDir(in)
		if err != nil {
			return nil, pathError(in, err)
		}
		var names []string
		for _, e := range entries {
			n := e.Name()
			if !e.IsDir() && (strings.HasSuffix(n, ".arrow") || strings.HasSuffix(n, ".arrows")) {
				names = append(names, n)
			}
		}
		sort.Strings(names)
		for _, n := range names {
			files = append(files, filepath.Join(in, n))
		}
	}
	return files, nil
}

// produceFile queues the tasks for one input file.
func produceFile(ctx context.Context, cfg config, path string, q queue) {
	fail := func(batch int, err error) {
		q.fail(&fileError{path, batch, err})
	}
	f, err := os.Open(path)
	if err != nil {
		q.fail(pathError(path, err))
		return
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		fail(-1, err)
		return
	}
	size := st.Size()
	var magic [6]byte
	n, err := io.ReadFull(f, magic[:])
	if err != nil && n == 0 {
		f.Close()
		fail(-1, errors.New("empty file, expected an Arrow IPC file or stream"))
		return
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		fail(-1, err)
		return
	}
	maxBuf := cfg.maxBuffer
	if maxBuf <= 0 {
		maxBuf = max(256<<20, 64*size)
	}
	base := cfg.alloc
	if base == nil {
		base = memory.DefaultAllocator
	}
	mem := &limitAllocator{mem: base, max: maxBuf}

	if string(magic[:n]) == "ARROW1" {
		var blocks []fileBlock
		err := protect(func() error {
			var err error
			blocks, err = checkFooter(f, size)
			return err
		})
		if err != nil {
			f.Close()
			fail(-1, fmt.Errorf("not a readable Arrow IPC file: %w", err))
			return
		}
		var fr *ipc.FileReader
		err = protect(func() error {
			var err error
			fr, err = ipc.NewFileReader(f, ipc.WithAllocator(mem), ipc.WithBodySizeLimit(size))
			return err
		})
		if err != nil {
			f.Close()
			mem.release()
			fail(-1, fmt.Errorf("not a readable Arrow IPC file: %w", err))
			return
		}
		// closed when the writer gets here, after every batch was encoded
		defer q.after(func() { protect(fr.Close); f.Close(); mem.release() })
		p, err := newPlan(fr.Schema(), path, cfg)
		if err != nil {
			fail(-1, err)
			return
		}
		if fr.NumRecords() != len(blocks) {
			fail(-1, corrupt("%d record batches, but %d blocks", fr.NumRecords(), len(blocks)))
			return
		}
		for i := 0; i < fr.NumRecords() && ctx.Err() == nil; i++ {
			var rec arrow.RecordBatch
			err := protect(func() error {
				if err := checkBlock(f, size, blocks[i]); err != nil {
					return err
				}
				var err error
				rec, err = fr.RecordBatchAt(i)
				return err
			})
			if err != nil {
				fail(i, fmt.Errorf("reading: %w", err))
				return
			}
			queueBatch(q, p, rec, path, i)
		}
		return
	}

	// An IPC stream.
	var sr *ipc.Reader
	err = protect(func() error {
		var err error
		sr, err = ipc.NewReader(&streamChecker{r: bufio.NewReaderSize(f, 1<<20), left: size}, ipc.WithAllocator(mem))
		return err
	})
	if err != nil {
		f.Close()
		mem.release()
		if n < 4 || string(magic[:4]) != "\xff\xff\xff\xff" {
			fail(-1, fmt.Errorf("not an Arrow IPC file or stream: it starts with %q, expected ARROW1 or a stream message", magic[:n]))
			return
		}
		fail(-1, fmt.Errorf("not a readable Arrow IPC stream: %w", err))
		return
	}
	defer q.after(func() { protect(func() error { sr.Release(); return nil }); f.Close(); mem.release() })
	p, err := newPlan(sr.Schema(), path, cfg)
	if err != nil {
		fail(-1, err)
		return
	}
	for i := 0; ctx.Err() == nil; i++ {
		var rec arrow.RecordBatch
		err := protect(func() error {
			if !sr.Next() {
				return sr.Err()
			}
			rec = sr.RecordBatch()
			rec.Retain()
			return nil
		})
		if err != nil {
			fail(i, fmt.Errorf("reading: %w", err))
			return
		}
		if rec == nil {
			return
		}
		if !p.sameSchema(rec.Schema()) {
			rec.Release()
			fail(i, errors.New("schema differs from the stream's schema"))
			return
		}
		queueBatch(q, p, rec, path, i)
	}
}
