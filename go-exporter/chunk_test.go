package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/memory"
)

// bigRows returns n rows whose text is about 1 KiB, so that one batch is
// cut into several parts of about chunkBytes.
func bigRows(from, n int) []row {
	rows := pipelineRows(from, n)
	for i, r := range rows {
		r["text"] = fmt.Sprintf("%06d ", from+i) + strings.Repeat("x日", 200)
	}
	return rows
}

// TestPartsKeepOrder exports batches that are cut into many parts, with
// several workers, and checks every row comes out once and in order.
func TestPartsKeepOrder(t *testing.T) {
	const perBatch = 3000 // about 2.4 MiB of text: 3 parts
	var batches [][]row
	for b := 0; b < 4; b++ {
		batches = append(batches, bigRows(b*perBatch, perBatch))
	}
	dir := t.TempDir()
	for _, stream := range []bool{false, true} {
		f := std(batches...)
		f.stream = stream
		path := writeFile(t, filepath.Join(dir, fmt.Sprintf("s%v.arrow", stream)), f.encode(t))
		for _, format := range []bool{false, true} {
			mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
			fields, _ := parseFields("text,score")
			var out bytes.Buffer
			cfg := config{fields: fields, inputs: []string{path}, workers: 3, json: format, alloc: mem}
			if err := exportTo(t.Context(), &out, cfg); err != nil {
				t.Fatal(err)
			}
			mem.AssertSize(t, 0)
			var objs []struct{ Text string }
			if format {
				if err := json.Unmarshal(out.Bytes(), &objs); err != nil {
					t.Fatalf("stream %v: not a JSON array: %v", stream, err)
				}
			} else {
				for _, line := range strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n") {
					var o struct{ Text string }
					if err := json.Unmarshal([]byte(line), &o); err != nil {
						t.Fatal(err)
					}
					objs = append(objs, o)
				}
			}
			if len(objs) != 4*perBatch {
				t.Fatalf("stream %v json %v: %d rows, want %d", stream, format, len(objs), 4*perBatch)
			}
			for i, o := range objs {
				if want := fmt.Sprintf("%06d ", i); !strings.HasPrefix(o.Text, want) {
					t.Fatalf("stream %v json %v: row %d is %.10q", stream, format, i, o.Text)
				}
			}
		}
	}
}

// TestErrorInLaterPart puts a bad score in the last part of a batch: the
// error names that batch and row, and only rows before it were written.
func TestErrorInLaterPart(t *testing.T) {
	rows := bigRows(0, 3000)
	rows[2900]["score"] = 1.5
	dir := t.TempDir()
	path := writeFile(t, filepath.Join(dir, "bad.arrow"), std(bigRows(5000, 10), rows).encode(t))
	fields, _ := parseFields("text,score")
	var out bytes.Buffer
	err := exportTo(t.Context(), &out, config{fields: fields, inputs: []string{path}, workers: 2})
	want := path + `: batch 1, row 2900, column "score": 1.5, expected a number in [0, 1]`
	if err == nil || err.Error() != want {
		t.Fatalf("error %v, want %s", err, want)
	}
	lines := strings.Count(out.String(), "\n")
	if lines < 10 || lines >= 10+2900 {
		t.Errorf("%d rows written before the error, want the first batch and at most the rows before the bad one", lines)
	}
}
