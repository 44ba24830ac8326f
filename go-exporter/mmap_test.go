package main

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
)

// bigFile returns an IPC file (or stream) of n batches of 200 rows of about
// 800 bytes of text each, 160 KB a batch.
func bigFile(t *testing.T, n int, stream bool) []byte {
	var batches [][]row
	for b := range n {
		batches = append(batches, bigRows(b*200, 200))
	}
	return arrowFile{cols: pipelineCols(), meta: pipelineMeta(), batches: batches, stream: stream}.encode(t)
}

// TestMappedFileIsReadAsBefore checks that an IPC file is mapped where the
// system can, and that its export is the same as through reads.
func TestMappedFileIsReadAsBefore(t *testing.T) {
	path := writeFile(t, filepath.Join(t.TempDir(), "part-00000.arrow"), bigFile(t, 6, false))
	fields, _ := parseFields(allFields)
	cfg := config{fields: fields, inputs: []string{path}, workers: 2}
	in, err := openInput(cfg, path)
	if err != nil {
		t.Fatal(err)
	}
	mapped := in.mapped != nil
	in.close()
	if !mapped && canMap {
		t.Fatal("the file was not mapped")
	}
	var viaMap bytes.Buffer
	if err := exportTo(t.Context(), &viaMap, cfg); err != nil {
		t.Fatal(err)
	}
	// the same file as a stream is read, not mapped
	spath := writeFile(t, filepath.Join(t.TempDir(), "part-00000.arrows"), bigFile(t, 6, true))
	var viaRead bytes.Buffer
	if err := exportTo(t.Context(), &viaRead, config{fields: fields, inputs: []string{spath}, workers: 2}); err != nil {
		t.Fatal(err)
	}
	if viaMap.Len() < 6*200*800 || !bytes.Equal(viaMap.Bytes(), viaRead.Bytes()) {
		t.Fatalf("mapped file: %d bytes, read stream: %d bytes, not the same", viaMap.Len(), viaRead.Len())
	}
}

// TestFileTruncatedWhileMapped truncates a mapped input under the exporter:
// reading its pages then faults, which must be an error that names the
// file, not a crash.
func TestFileTruncatedWhileMapped(t *testing.T) {
	if !canMap {
		t.Skip("no mmap here")
	}
	path := writeFile(t, filepath.Join(t.TempDir(), "part-00000.arrow"), bigFile(t, 4, false))
	fields, _ := parseFields(allFields)
	cfg := config{fields: fields, inputs: []string{path}, workers: 2}

	// a batch read before the truncation, encoded after it: the encoder
	// reads the mapped pages, which are gone
	in, err := openInput(cfg, path)
	if err != nil {
		t.Fatal(err)
	}
	defer in.close()
	rec, err := in.next(0)
	if err != nil {
		t.Fatal(err)
	}
	defer rec.Release()
	p, err := newPlan(in.schema, path, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	err = protect(func() error {
		enc, err := newBatchEncoder(p, rec, path, 0)
		if err != nil {
			return err
		}
		_, err = enc.encodeRows(nil, 0, int(rec.NumRows()))
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "the file changed while it was read") {
		t.Fatalf("encoding a batch of a truncated mapped file: %v", err)
	}

	// the whole export, the file truncated when the first part is written:
	// whatever was still to read fails, with the file's name. The first
	// write comes after about 256 KiB of JSON (two batches here), when the
	// reader can be at most 2*workers+2 batches further: with 16, some
	// are always still to read (with 4, a fast encoder had them all read
	// and encoded before it, now and then, and nothing failed).
	writeFile(t, path, bigFile(t, 16, false))
	w := &truncatingWriter{path: path}
	err = exportTo(t.Context(), w, config{fields: fields, inputs: []string{path}, workers: 2})
	if err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("export of a file truncated while read: %v", err)
	}
}

// truncatingWriter truncates the file at path when it is first written to.
type truncatingWriter struct {
	path string
	done bool
}

func (w *truncatingWriter) Write(b []byte) (int, error) {
	if !w.done {
		w.done = true
		if err := os.Truncate(w.path, 0); err != nil {
			return 0, err
		}
	}
	return len(b), nil
}
