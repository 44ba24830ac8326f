package main

// The inputs: folders expanded to their Arrow files, each opened as an IPC
// file or stream.

import (
	"bufio"
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

// ipcInput is one input opened as an IPC file or as an IPC stream.
type ipcInput struct {
	path   string
	f      *os.File
	size   int64
	mem    *limitAllocator
	pool   *bodyPool // under mem
	schema *arrow.Schema

	file   *ipc.FileReader // an IPC file: its reader and its record batch blocks
	blocks []fileBlock
	mapped []byte      // the IPC file mapped into memory, if it could be
	stream *ipc.Reader // an IPC stream
}

// openInput opens path as an IPC file or stream, as its first bytes say, and
// reads its schema. Its errors are fileErrors; after one, nothing is left
// open.
func openInput(cfg config, path string) (*ipcInput, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, pathError(path, err)
	}
	in := &ipcInput{path: path, f: f}
	if err := in.open(cfg); err != nil {
		in.close()
		return nil, err
	}
	return in, nil
}

func (in *ipcInput) open(cfg config) error {
	st, err := in.f.Stat()
	if err != nil {
		return in.wrap(-1, err)
	}
	in.size = st.Size()
	in.mem, in.pool = readerAllocator(cfg, in.size)
	var magic [6]byte
	n, err := io.ReadFull(in.f, magic[:])
	if err != nil && n == 0 {
		return in.wrap(-1, errors.New("empty file, expected an Arrow IPC file or stream"))
	}
	if _, err := in.f.Seek(0, io.SeekStart); err != nil {
		return in.wrap(-1, err)
	}
	if string(magic[:n]) == "ARROW1" {
		return in.openFile()
	}
	return in.openStream(magic[:n])
}

// readerAllocator returns the allocator of the Arrow readers of an input of
// size bytes and the pool of bodies under it.
func readerAllocator(cfg config, size int64) (*limitAllocator, *bodyPool) {
	maxBuf := cfg.maxBuffer
	if maxBuf <= 0 {
		maxBuf = max(256<<20, 64*size)
	}
	base := cfg.alloc
	if base == nil {
		base = memory.DefaultAllocator
	}
	pool := &bodyPool{mem: base}
	return &limitAllocator{mem: pool, max: maxBuf}, pool
}

// openFile opens the input as an IPC file. It is mapped into memory where
// the system can: the batches' buffers are then slices of the mapping,
// neither read nor copied (the kernel's copy into a buffer, and its zeroing,
// were a sixth of the export's time). A fault reading the mapping (the file
// truncated under us) panics in the goroutines that read it, which set
// debug.SetPanicOnFault, and protect makes that an error.
func (in *ipcInput) openFile() error {
	err := protect(func() error {
		var err error
		in.blocks, err = checkFooter(in.f, in.size)
		return err
	})
	if err == nil {
		if data, mapErr := mapFile(in.f, in.size); mapErr == nil {
			in.mapped = data
		}
		err = protect(func() error {
			var fr *ipc.FileReader
			var err error
			opts := []ipc.Option{ipc.WithAllocator(in.mem), ipc.WithBodySizeLimit(in.size)}
			if in.mapped != nil {
				fr, err = ipc.NewMappedFileReader(in.mapped, opts...)
			} else {
				fr, err = ipc.NewFileReader(in.f, opts...)
			}
			if err == nil {
				in.file = fr
			}
			return err
		})
	}
	if err != nil {
		return in.wrap(-1, fmt.Errorf("not a readable Arrow IPC file: %w", err))
	}
	in.schema = in.file.Schema()
	return nil
}

// openStream opens the input as a stream; magic is its first bytes.
func (in *ipcInput) openStream(magic []byte) error {
	err := protect(func() error {
		sr, err := ipc.NewReader(&streamChecker{r: bufio.NewReaderSize(in.f, 1<<20), left: in.size}, ipc.WithAllocator(in.mem), ipc.WithBodySizeLimit(in.size))
		if err == nil {
			in.stream = sr
		}
		return err
	})
	if err != nil {
		if len(magic) < 4 || string(magic[:4]) != "\xff\xff\xff\xff" {
			return in.wrap(-1, fmt.Errorf("not an Arrow IPC file or stream: it starts with %q, expected ARROW1 or a stream message", magic))
		}
		return in.wrap(-1, fmt.Errorf("not a readable Arrow IPC stream: %w", err))
	}
	in.schema = in.stream.Schema()
	return nil
}

// next returns record batch i, or nil after the last; it is called with
// i = 0, 1, 2... The caller releases the batch.
func (in *ipcInput) next(i int) (arrow.RecordBatch, error) {
	if in.file != nil {
		return in.nextInFile(i)
	}
	return in.nextInStream(i)
}

// nextInFile checks the footer's count of batches when the first batch is
// asked for, after the plan was made, so that a plan's error comes first.
// What reads the file is under protect: the footer too may be in the
// mapping.
func (in *ipcInput) nextInFile(i int) (arrow.RecordBatch, error) {
	if i == 0 {
		n := 0
		if err := protect(func() error { n = in.file.NumRecords(); return nil }); err != nil {
			return nil, in.wrap(-1, err)
		}
		if n != len(in.blocks) {
			return nil, in.wrap(-1, corrupt("%d record batches, but %d blocks", n, len(in.blocks)))
		}
	}
	if i >= len(in.blocks) {
		return nil, nil
	}
	var rec arrow.RecordBatch
	err := protect(func() error {
		if err := checkBlock(in.f, in.size, in.blocks[i]); err != nil {
			return err
		}
		var err error
		rec, err = in.file.RecordBatchAt(i)
		return err
	})
	if err != nil {
		return nil, in.wrap(i, fmt.Errorf("reading: %w", err))
	}
	return rec, nil
}

func (in *ipcInput) nextInStream(i int) (arrow.RecordBatch, error) {
	var rec arrow.RecordBatch
	err := protect(func() error {
		if !in.stream.Next() {
			return in.stream.Err()
		}
		rec = in.stream.RecordBatch()
		rec.Retain()
		return nil
	})
	if err != nil {
		return nil, in.wrap(i, fmt.Errorf("reading: %w", err))
	}
	if rec != nil && rec.Schema() != in.schema && !rec.Schema().Equal(in.schema) {
		rec.Release()
		return nil, in.wrap(i, errors.New("schema differs from the stream's schema"))
	}
	return rec, nil
}

// release releases batch i, which next returned, and the pages of the
// mapped file that held it.
func (in *ipcInput) release(i int, rec arrow.RecordBatch) {
	rec.Release()
	if in.mapped != nil && i < len(in.blocks) {
		b := in.blocks[i]
		dropPages(in.mapped, b.offset, b.offset+int64(b.meta)+b.body)
	}
}

// close releases the reader, unmaps and closes the file and gives the
// pool's spare buffers back.
func (in *ipcInput) close() {
	if in.file != nil {
		protect(in.file.Close)
	}
	if in.mapped != nil {
		unmapFile(in.mapped)
	}
	if in.stream != nil {
		protect(func() error { in.stream.Release(); return nil })
	}
	in.f.Close()
	if in.pool != nil {
		in.pool.release()
	}
}

// wrap says that err is about batch (or, if batch < 0, the whole input).
func (in *ipcInput) wrap(batch int, err error) error {
	return &fileError{in.path, batch, err}
}
