package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/ipc"
)

// fuzzSeeds are small valid inputs of every supported layout.
func fuzzSeeds(t testing.TB) map[string][]byte {
	rows := pipelineRows(0, 2)
	rows[1]["text"] = "two\n\"lines\"\xff"
	seeds := map[string][]byte{
		"file":        std(rows).encode(t),
		"file_empty":  std().encode(t),
		"stream":      arrowFile{cols: pipelineCols(), meta: pipelineMeta(), batches: [][]row{rows, rows[:1]}, stream: true}.encode(t),
		"file_lz4":    arrowFile{cols: pipelineCols(), meta: pipelineMeta(), batches: [][]row{rows}, opts: []ipc.Option{ipc.WithLZ4()}}.encode(t),
		"stream_zstd": arrowFile{cols: pipelineCols(), meta: pipelineMeta(), batches: [][]row{rows}, stream: true, opts: []ipc.Option{ipc.WithZstd()}}.encode(t),
		"file_view_dict": arrowFile{cols: withCols(map[string]arrow.DataType{
			"text": utf8View, "label": dictOf(arrow.PrimitiveTypes.Int8, tUTF8), "id": largeUTF8,
			"score": f32, "probs": arrow.ListOf(f32),
		}), meta: pipelineMeta(), batches: [][]row{rows}}.encode(t),
		"stream_dict_large_list": arrowFile{cols: withCols(map[string]arrow.DataType{
			"model_version": dictOf(arrow.PrimitiveTypes.Uint16, largeUTF8), "probs": arrow.LargeListOf(f64),
		}), meta: pipelineMeta(), batches: [][]row{rows, rows}, stream: true}.encode(t),
	}
	return seeds
}

// TestWriteFuzzSeeds rewrites testdata/fuzz/FuzzExport with -update.
func TestWriteFuzzSeeds(t *testing.T) {
	if !*update {
		t.Skip("only with -update")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzExport")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range fuzzSeeds(t) {
		content := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
		if err := os.WriteFile(filepath.Join(dir, "seed_"+name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// fuzzHang is how long one input may take before the fuzz target reports a
// hang; a valid input of a few KiB takes about a millisecond.
const fuzzHang = 10 * time.Second

// FuzzExport feeds arbitrary bytes, as a file, to the reader and encoder:
// it must return an error or valid output, never panic, hang or allocate
// without bound.
func FuzzExport(f *testing.F) {
	dir := filepath.Join(f.TempDir(), "date=2026-01-04")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		f.Fatal(err)
	}
	fields, _ := parseFields(allFields)
	f.Fuzz(func(t *testing.T, data []byte) {
		tmp, err := os.CreateTemp(dir, "in-*.arrow")
		if err != nil {
			t.Fatal(err)
		}
		defer os.Remove(tmp.Name())
		tmp.Write(data)
		tmp.Close()
		cfg := config{fields: fields, inputs: []string{tmp.Name()}, workers: 2, maxBuffer: 64 << 20}
		var out bytes.Buffer
		done := make(chan struct{})
		go func() {
			defer close(done)
			err = exportTo(t.Context(), &out, cfg)
		}()
		select {
		case <-done:
		case <-time.After(fuzzHang):
			// a hang is a failure like a panic: report it with the stacks
			// (the fuzzer saves the input)
			buf := make([]byte, 1<<20)
			t.Fatalf("export of %d bytes still running after %v:\n%s", len(data), fuzzHang, buf[:runtime.Stack(buf, true)])
		}
		if err != nil {
			if !strings.HasPrefix(err.Error(), tmp.Name()+": ") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		sc := bufio.NewScanner(&out)
		sc.Buffer(nil, 1<<30)
		for sc.Scan() {
			if err := validateContract(sc.Bytes()); err != nil {
				t.Fatalf("%s: %v", sc.Bytes(), err)
			}
		}
	})
}
