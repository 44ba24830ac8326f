package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

// row is one input row: column name -> value; a missing or nil value is a
// null. Values: string, float64, []float64, int64 (timestamps, label_id).
type row map[string]any

// colType names the Arrow type of a test column.
type col struct {
	name string
	typ  arrow.DataType
}

var (
	tUTF8     = arrow.BinaryTypes.String
	largeUTF8 = arrow.BinaryTypes.LargeString
	utf8View  = arrow.BinaryTypes.StringView
	f64       = arrow.PrimitiveTypes.Float64
	f32       = arrow.PrimitiveTypes.Float32
	tsUS      = &arrow.TimestampType{Unit: arrow.Microsecond, TimeZone: "UTC"}
)

func dictOf(idx arrow.DataType, val arrow.DataType) arrow.DataType {
	return &arrow.DictionaryType{IndexType: idx, ValueType: val}
}

var testClasses = []string{"negative", "neutral", "positive"}

// pipelineCols is the pipeline's schema version 1.
func pipelineCols() []col {
	return []col{
		{"id", tUTF8}, {"text", tUTF8}, {"label", tUTF8}, {"label_id", arrow.PrimitiveTypes.Int32},
		{"score", f64}, {"probs", arrow.FixedSizeListOf(3, f64)}, {"model_version", tUTF8}, {"scored_at", tsUS},
	}
}

func pipelineMeta() map[string]string {
	return map[string]string{
		"pipeline.schema_version": "1",
		"pipeline.classes":        `["negative","neutral","positive"]`,
		"pipeline.vocab_version":  "vocab-3",
		"pipeline.model_version":  "m-2026.01",
		"pipeline.partition":      "2026-01-04",
	}
}

// pipelineRow is a valid row n.
func pipelineRow(n int) row {
	p := []float64{0.1, 0.2, 0.7}
	if n%2 == 1 {
		p = []float64{0.625, 0.25, 0.125}
	}
	best := 0
	for i := range p {
		if p[i] > p[best] {
			best = i
		}
	}
	return row{
		"id":            fmt.Sprintf("r%04d", n),
		"text":          fmt.Sprintf("text number %d", n),
		"label":         testClasses[best],
		"label_id":      int64(best),
		"score":         p[best],
		"probs":         p,
		"model_version": "m-2026.01",
		// 2026-01-04T02:00:00.123456Z plus n seconds
		"scored_at": int64(1767492000123456) + int64(n)*1_000_000,
	}
}

func pipelineRows(from, n int) []row {
	var rows []row
	for i := from; i < from+n; i++ {
		rows = append(rows, pipelineRow(i))
	}
	return rows
}

func schemaOf(cols []col, meta map[string]string) *arrow.Schema {
	var fields []arrow.Field
	for _, c := range cols {
		fields = append(fields, arrow.Field{Name: c.name, Type: c.typ, Nullable: true})
	}
	var md *arrow.Metadata
	if meta != nil {
		var keys, vals []string
		for k, v := range meta {
			keys = append(keys, k)
			vals = append(vals, v)
		}
		m := arrow.NewMetadata(keys, vals)
		md = &m
	}
	return arrow.NewSchema(fields, md)
}

func appendValue(t testing.TB, b array.Builder, v any) {
	if v == nil {
		b.AppendNull()
		return
	}
	switch b := b.(type) {
	case *array.StringBuilder:
		b.Append(v.(string))
	case *array.LargeStringBuilder:
		b.Append(v.(string))
	case *array.StringViewBuilder:
		b.Append(v.(string))
	case *array.BinaryDictionaryBuilder:
		if err := b.AppendString(v.(string)); err != nil {
			t.Fatal(err)
		}
	case *array.Float64Builder:
		b.Append(v.(float64))
	case *array.Float32Builder:
		b.Append(float32(v.(float64)))
	case *array.Int32Builder:
		b.Append(int32(v.(int64)))
	case *array.Int64Builder:
		b.Append(v.(int64))
	case *array.TimestampBuilder:
		b.Append(arrow.Timestamp(v.(int64)))
	case *array.FixedSizeListBuilder:
		b.Append(true)
		for _, x := range v.([]float64) {
			appendValue(t, b.ValueBuilder(), x)
		}
	case *array.ListBuilder:
		b.Append(true)
		for _, x := range v.([]float64) {
			appendValue(t, b.ValueBuilder(), x)
		}
	case *array.LargeListBuilder:
		b.Append(true)
		for _, x := range v.([]float64) {
			appendValue(t, b.ValueBuilder(), x)
		}
	default:
		t.Fatalf("no test support for builder %T", b)
	}
}

// makeBatch builds one record batch of rows.
func makeBatch(t testing.TB, mem memory.Allocator, schema *arrow.Schema, rows []row) arrow.RecordBatch {
	var cols []arrow.Array
	for _, f := range schema.Fields() {
		var vals []any
		for _, r := range rows {
			vals = append(vals, r[f.Name])
		}
		cols = append(cols, makeColumn(t, mem, f.Type, vals))
	}
	rec := array.NewRecordBatch(schema, cols, int64(len(rows)))
	for _, c := range cols {
		c.Release()
	}
	return rec
}

// makeColumn builds one column; dictionaries are built by hand, as the
// dictionary builders support only some value types.
func makeColumn(t testing.TB, mem memory.Allocator, typ arrow.DataType, vals []any) arrow.Array {
	dt, ok := typ.(*arrow.DictionaryType)
	if !ok {
		b := array.NewBuilder(mem, typ)
		defer b.Release()
		for _, v := range vals {
			appendValue(t, b, v)
		}
		return b.NewArray()
	}
	seen := map[string]int{}
	var distinct []any
	ib := array.NewBuilder(mem, dt.IndexType)
	defer ib.Release()
	for _, v := range vals {
		if v == nil {
			ib.AppendNull()
			continue
		}
		s := v.(string)
		k, ok := seen[s]
		if !ok {
			k = len(distinct)
			seen[s] = k
			distinct = append(distinct, s)
		}
		appendInt(t, ib, int64(k))
	}
	idx := ib.NewArray()
	defer idx.Release()
	dict := makeColumn(t, mem, dt.ValueType, distinct)
	defer dict.Release()
	return array.NewDictionaryArray(dt, idx, dict)
}

func appendInt(t testing.TB, b array.Builder, v int64) {
	switch b := b.(type) {
	case *array.Int8Builder:
		b.Append(int8(v))
	case *array.Int16Builder:
		b.Append(int16(v))
	case *array.Int32Builder:
		b.Append(int32(v))
	case *array.Int64Builder:
		b.Append(v)
	case *array.Uint8Builder:
		b.Append(uint8(v))
	case *array.Uint16Builder:
		b.Append(uint16(v))
	case *array.Uint32Builder:
		b.Append(uint32(v))
	case *array.Uint64Builder:
		b.Append(uint64(v))
	default:
		t.Fatalf("no test support for index builder %T", b)
	}
}

// arrowFile describes a test input.
type arrowFile struct {
	cols    []col
	meta    map[string]string
	batches [][]row
	stream  bool
	opts    []ipc.Option // e.g. ipc.WithLZ4()
}

// encode returns the bytes of the file.
func (f arrowFile) encode(t testing.TB) []byte {
	t.Helper()
	mem := memory.NewGoAllocator()
	schema := schemaOf(f.cols, f.meta)
	var buf bytes.Buffer
	opts := append([]ipc.Option{ipc.WithSchema(schema), ipc.WithAllocator(mem)}, f.opts...)
	var w interface {
		Write(arrow.RecordBatch) error
		Close() error
	}
	if f.stream {
		w = ipc.NewWriter(&buf, opts...)
	} else {
		fw, err := ipc.NewFileWriter(&buf, opts...)
		if err != nil {
			t.Fatal(err)
		}
		w = fw
	}
	for _, rows := range f.batches {
		rec := makeBatch(t, mem, schema, rows)
		if err := w.Write(rec); err != nil {
			t.Fatal(err)
		}
		rec.Release()
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func writeFile(t testing.TB, path string, data []byte) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// runCmd runs the command line in dir (a test folder; paths in args are
// relative to it) and returns stdout and the error.
func runCmd(t testing.TB, dir string, args ...string) (string, error) {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chdir(dir); err != nil {
		t.Fatal(err)
	}
	defer os.Chdir(wd)
	var stdout bytes.Buffer
	err = run(context.Background(), &stdout, args)
	return stdout.String(), err
}

// golden compares got with testdata/golden/name.golden (or rewrites it with
// -update).
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", "golden", name+".golden")
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s (go test -update rewrites it)\n--- got:\n%s\n--- want:\n%s", path, got, want)
	}
}

func sanitize(s string) string { return strings.ToValidUTF8(s, "?") }
