package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// TestPythonSamples reads the files pyarrow and polars wrote
// (testdata/gen_testdata.py).
func TestPythonSamples(t *testing.T) {
	for _, c := range []struct {
		name string
		args []string
	}{
		{"python_pipeline", []string{"-fields", allFields, "testdata/python/date=2026-01-04/part-00000.arrow"}},
		{"python_folder", []string{"-fields", "text,label,score,probs,partition", "testdata/python/date=2026-01-04"}},
		{"python_polars", []string{"-format", "json", "-fields", "id,text,label,score,scored_at", "testdata/python/polars.arrow"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var stdout bytes.Buffer
			err := run(t.Context(), &stdout, c.args)
			got := stdout.String()
			if err != nil {
				got += "--- error: " + err.Error() + "\n"
			}
			golden(t, c.name, got)
			checkContract(t, stdout.String(), c.args)
		})
	}
}

// TestBodyOver256MiB writes one record batch whose body is over 256 MiB,
// which arrow-go's file reader refuses unless told otherwise.
func TestBodyOver256MiB(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	const rows, size = 270, 1 << 20 // 270 MiB of text
	mem := memory.NewGoAllocator()
	schema := arrow.NewSchema([]arrow.Field{{Name: "text", Type: arrow.BinaryTypes.String}, {Name: "label", Type: arrow.BinaryTypes.String}, {Name: "score", Type: arrow.PrimitiveTypes.Float64}}, nil)
	text := strings.Repeat("x", size)
	tb := array.NewStringBuilder(mem)
	lb := array.NewStringBuilder(mem)
	sb := array.NewFloat64Builder(mem)
	tb.ReserveData(rows * size)
	for i := 0; i < rows; i++ {
		tb.Append(text)
		lb.Append("pos")
		sb.Append(0.5)
	}
	cols := []arrow.Array{tb.NewArray(), lb.NewArray(), sb.NewArray()}
	rec := array.NewRecordBatch(schema, cols, rows)
	for _, c := range cols {
		c.Release()
	}
	dir := t.TempDir()
	for _, stream := range []bool{false, true} {
		path := filepath.Join(dir, "big.arrow")
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		if stream {
			w := ipc.NewWriter(f, ipc.WithSchema(schema))
			if err := w.Write(rec); err != nil {
				t.Fatal(err)
			}
			w.Close()
		} else {
			w, err := ipc.NewFileWriter(f, ipc.WithSchema(schema))
			if err != nil {
				t.Fatal(err)
			}
			if err := w.Write(rec); err != nil {
				t.Fatal(err)
			}
			w.Close()
		}
		f.Close()
		var out countingWriter
		fields, _ := parseFields("label,score")
		if err := exportTo(t.Context(), &out, config{fields: fields, inputs: []string{path}, workers: 1}); err != nil {
			t.Fatalf("stream %v: %v", stream, err)
		}
		if want := rows * len(`{"label":"pos","score":0.5}`+"\n"); out.n != want {
			t.Errorf("stream %v: %d bytes of output, want %d", stream, out.n, want)
		}
	}
	rec.Release()
}

type countingWriter struct{ n int }

func (w *countingWriter) Write(p []byte) (int, error) { w.n += len(p); return len(p), nil }

// benchFile is a pipeline file of 8 batches of 20,000 rows, with texts of
// about 230 bytes.
func benchFile() arrowFile {
	var batches [][]row
	long := strings.Repeat("a fairly ordinary review sentence. ", 6)
	for i := 0; i < 8; i++ {
		rows := pipelineRows(i*20000, 20000)
		for _, r := range rows {
			r["text"] = long + r["text"].(string)
		}
		batches = append(batches, rows)
	}
	return std(batches...)
}

// BenchmarkExport measures the throughput on benchFile with all fields.
func BenchmarkExport(b *testing.B) {
	path := writeFile(b, filepath.Join(b.TempDir(), "date=2026-01-04", "bench.arrow"), benchFile().encode(b))
	st, _ := os.Stat(path)
	fields, _ := parseFields(allFields)
	b.SetBytes(st.Size())
	for b.Loop() {
		var out countingWriter
		if err := exportTo(b.Context(), &out, config{fields: fields, inputs: []string{path}, workers: 2}); err != nil {
			b.Fatal(err)
		}
	}
}
