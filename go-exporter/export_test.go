package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

const allFields = "id,text,label,score,model_version,scored_at,partition,probs"

// withCols returns the pipeline columns with the named ones replaced.
func withCols(repl map[string]arrow.DataType) []col {
	var cols []col
	for _, c := range pipelineCols() {
		if t, ok := repl[c.name]; ok {
			if t == nil {
				continue // dropped
			}
			c.typ = t
		}
		cols = append(cols, c)
	}
	return cols
}

func withMeta(repl map[string]string) map[string]string {
	m := pipelineMeta()
	for k, v := range repl {
		if v == "" {
			delete(m, k)
		} else {
			m[k] = v
		}
	}
	return m
}

func rowsWith(n int, r int, change row) []row {
	rows := pipelineRows(0, n)
	for k, v := range change {
		rows[r][k] = v
	}
	return rows
}

const partFile = "preds/date=2026-01-04/part-00000.arrow"

type exportCase struct {
	name  string
	files func(t testing.TB) map[string][]byte
	args  []string
}

// write writes the case's files to a new test folder and returns it.
func (c exportCase) write(t *testing.T) string {
	dir := t.TempDir()
	for p, b := range c.files(t) {
		writeFile(t, filepath.Join(dir, p), b)
	}
	return dir
}

// one returns the files of one pipeline file at partFile.
func one(f arrowFile) func(t testing.TB) map[string][]byte {
	return func(t testing.TB) map[string][]byte { return map[string][]byte{partFile: f.encode(t)} }
}

func std(batches ...[]row) arrowFile {
	return arrowFile{cols: pipelineCols(), meta: pipelineMeta(), batches: batches}
}

func exportCases() []exportCase {
	all := []string{"-fields", allFields, partFile}
	manyBatches := func() [][]row {
		var b [][]row
		for i := 0; i < 40; i++ {
			b = append(b, pipelineRows(i*3, i%4)) // some batches empty
		}
		return b
	}
	escapes := []row{
		{"text": "quote \" backslash \\ slash / <b>&amp;</b>", "label": "a", "score": 0.5},
		{"text": "nl\ncr\rtab\tbs\bff\fnul\x00us\x1fdel\x7f", "label": "a", "score": 0.5},
		{"text": "ls\u2028ps\u2029 é 日本 🙂", "label": "a", "score": 0.5},
		{"text": "bad \xff\xfe utf8 \xe2\x82 end \xed\xa0\x80", "label": "l\xffab", "score": 0.5},
		{"text": "", "label": "a", "score": 0.0},
		{"text": "tiny", "label": "a", "score": 1e-7},
		{"text": "one", "label": "a", "score": 1.0},
		{"text": "third", "label": "a", "score": 1.0 / 3},
		{"text": "negzero", "label": "a", "score": math.Copysign(0, -1)},
	}
	// escapes with all the other pipeline columns
	fullEscapes := func(rows []row) []row {
		var out []row
		for i, r := range rows {
			full := pipelineRow(100 + i)
			for k, v := range r {
				full[k] = v
			}
			out = append(out, full)
		}
		return out
	}
	simple := []col{{"text", tUTF8}, {"label", tUTF8}, {"score", f64}}
	strTypes := map[string]arrow.DataType{
		"large_utf8": largeUTF8,
		"utf8_view":  utf8View,
		"dict_int8":  dictOf(arrow.PrimitiveTypes.Int8, tUTF8),
		"dict_int16": dictOf(arrow.PrimitiveTypes.Int16, tUTF8),
		"dict_int32": dictOf(arrow.PrimitiveTypes.Int32, largeUTF8),
		"dict_int64": dictOf(arrow.PrimitiveTypes.Int64, tUTF8),
		"dict_uint8": dictOf(arrow.PrimitiveTypes.Uint8, tUTF8),
	}
	cases := []exportCase{
		{name: "default_fields", files: one(std(pipelineRows(0, 4))), args: []string{partFile}},
		{name: "all_fields", files: one(std(pipelineRows(0, 4))), args: all},
		{name: "all_fields_json", files: one(std(pipelineRows(0, 3))), args: []string{"-format", "json", "-fields", allFields, partFile}},
		{name: "field_order", files: one(std(pipelineRows(0, 2))), args: []string{"-fields", "score,partition,id", partFile}},
		{name: "partition_only", files: one(std(pipelineRows(0, 2))), args: []string{"-fields", "partition", partFile}},
		{name: "escapes", files: one(arrowFile{cols: simple, batches: [][]row{escapes}}), args: []string{partFile}},
		{name: "escapes_utf8_view", files: one(arrowFile{cols: []col{{"text", utf8View}, {"label", utf8View}, {"score", f64}}, batches: [][]row{escapes}}), args: []string{partFile}},
		{name: "float32_score", files: one(arrowFile{cols: withCols(map[string]arrow.DataType{"score": f32, "probs": arrow.FixedSizeListOf(3, f32)}), meta: pipelineMeta(), batches: [][]row{pipelineRows(0, 3), fullEscapes(escapes[5:8])}}), args: []string{"-fields", "text,score,probs", partFile}},
		{name: "probs_list", files: one(arrowFile{cols: withCols(map[string]arrow.DataType{"probs": arrow.ListOf(f64)}), meta: pipelineMeta(), batches: [][]row{pipelineRows(0, 3)}}), args: []string{"-fields", "id,probs", partFile}},
		{name: "probs_large_list_f32", files: one(arrowFile{cols: withCols(map[string]arrow.DataType{"probs": arrow.LargeListOf(f32)}), meta: pipelineMeta(), batches: [][]row{pipelineRows(0, 3)}}), args: []string{"-fields", "id,probs", partFile}},
		{name: "lz4", files: one(arrowFile{cols: pipelineCols(), meta: pipelineMeta(), batches: [][]row{pipelineRows(0, 50), pipelineRows(50, 50)}, opts: []ipc.Option{ipc.WithLZ4()}}), args: all},
		{name: "zstd", files: one(arrowFile{cols: pipelineCols(), meta: pipelineMeta(), batches: [][]row{pipelineRows(0, 50), pipelineRows(50, 50)}, opts: []ipc.Option{ipc.WithZstd()}}), args: all},
		{name: "stream", files: one(arrowFile{cols: pipelineCols(), meta: pipelineMeta(), batches: [][]row{pipelineRows(0, 3), pipelineRows(3, 2)}, stream: true}), args: all},
		{name: "stream_zstd_dict", files: one(arrowFile{cols: withCols(map[string]arrow.DataType{"label": dictOf(arrow.PrimitiveTypes.Int16, tUTF8)}), meta: pipelineMeta(), batches: [][]row{pipelineRows(0, 3), pipelineRows(3, 2)}, stream: true, opts: []ipc.Option{ipc.WithZstd()}}), args: all},
		{name: "many_batches", files: one(std(manyBatches()...)), args: []string{"-workers", "3", "-fields", "id,label", partFile}},
		{name: "many_batches_json", files: one(std(manyBatches()...)), args: []string{"-workers", "4", "-format", "json", "-fields", "id", partFile}},
		{name: "empty_file", files: one(std()), args: []string{partFile}},
		{name: "empty_file_json", files: one(std()), args: []string{"-format", "json", partFile}},
		{name: "empty_stream_json", files: one(arrowFile{cols: pipelineCols(), meta: pipelineMeta(), stream: true}), args: []string{"-format", "json", partFile}},
		{name: "empty_batches_json", files: one(std(nil, nil)), args: []string{"-format", "json", partFile}},
		{name: "folder", files: func(t testing.TB) map[string][]byte {
			return map[string][]byte{
				"preds/date=2026-01-05/part-00001.arrow":  std(pipelineRows(10, 2)).encode(t),
				"preds/date=2026-01-05/part-00000.arrows": arrowFile{cols: pipelineCols(), meta: withMeta(map[string]string{"pipeline.partition": ""}), batches: [][]row{pipelineRows(0, 2)}, stream: true}.encode(t),
				"preds/date=2026-01-05/README.txt":        []byte("not arrow"),
				"preds/date=2026-01-05/sub/part-9.arrow":  []byte("not read"),
			}
		}, args: []string{"-fields", "id,partition", "preds/date=2026-01-05"}},
		{name: "partition_from_path", files: one(arrowFile{cols: pipelineCols(), meta: withMeta(map[string]string{"pipeline.partition": ""}), batches: [][]row{pipelineRows(0, 1)}}), args: []string{"-fields", "id,partition", partFile}},
		{name: "model_version_from_metadata", files: one(arrowFile{cols: withCols(map[string]arrow.DataType{"model_version": nil}), meta: pipelineMeta(), batches: [][]row{pipelineRows(0, 1)}}), args: []string{"-fields", "id,model_version", partFile}},
		{name: "other_producer", files: one(arrowFile{cols: []col{{"label", dictOf(arrow.PrimitiveTypes.Int32, utf8View)}, {"extra", arrow.PrimitiveTypes.Int64}, {"score", f32}, {"text", largeUTF8}}, batches: [][]row{pipelineRows(0, 3)}}), args: []string{partFile}},
		{name: "scored_at_units", files: one(arrowFile{cols: []col{{"text", tUTF8}, {"scored_at", &arrow.TimestampType{Unit: arrow.Nanosecond}}}, batches: [][]row{{
			{"text": "ns", "scored_at": int64(1767492000123456789)},
			{"text": "whole", "scored_at": int64(1767492000000000000)},
			{"text": "ms", "scored_at": int64(1767492000100000000)},
			{"text": "epoch", "scored_at": int64(0)},
		}}}), args: []string{"-fields", "text,scored_at", partFile}},

		// errors
		{name: "err_null_text", files: one(std(pipelineRows(0, 2), rowsWith(3, 2, row{"text": nil}))), args: []string{partFile}},
		{name: "err_null_label", files: one(std(rowsWith(3, 1, row{"label": nil}))), args: []string{partFile}},
		{name: "err_empty_label", files: one(std(rowsWith(3, 1, row{"label": ""}))), args: []string{partFile}},
		{name: "err_null_score", files: one(std(rowsWith(3, 1, row{"score": nil}))), args: []string{partFile}},
		{name: "err_nan_score", files: one(std(pipelineRows(0, 5), rowsWith(20, 17, row{"score": math.NaN()}))), args: []string{partFile}},
		{name: "err_inf_score", files: one(std(rowsWith(3, 0, row{"score": math.Inf(1)}))), args: []string{partFile}},
		{name: "err_score_above_1", files: one(std(rowsWith(3, 2, row{"score": 1.5}))), args: []string{partFile}},
		{name: "err_score_below_0", files: one(std(rowsWith(3, 2, row{"score": -1e-9}))), args: []string{partFile}},
		{name: "err_prob_nan", files: one(std(rowsWith(3, 1, row{"probs": []float64{0.5, math.NaN(), 0.5}}))), args: all},
		{name: "err_null_probs", files: one(std(rowsWith(3, 1, row{"probs": nil}))), args: all},
		{name: "err_null_id", files: one(std(rowsWith(3, 1, row{"id": nil}))), args: all},
		{name: "err_null_scored_at", files: one(std(rowsWith(3, 1, row{"scored_at": nil}))), args: all},
		{name: "err_probs_list_length", files: one(arrowFile{cols: withCols(map[string]arrow.DataType{"probs": arrow.ListOf(f64)}), meta: pipelineMeta(), batches: [][]row{rowsWith(3, 2, row{"probs": []float64{0.5, 0.5}})}}), args: all},
		{name: "err_probs_fixed_size_mismatch", files: one(arrowFile{cols: pipelineCols(), meta: withMeta(map[string]string{"pipeline.classes": `["a","b"]`}), batches: [][]row{pipelineRows(0, 1)}}), args: all},
		{name: "err_no_classes", files: one(arrowFile{cols: pipelineCols(), meta: withMeta(map[string]string{"pipeline.classes": ""}), batches: [][]row{pipelineRows(0, 1)}}), args: all},
		{name: "err_bad_classes", files: one(arrowFile{cols: pipelineCols(), meta: withMeta(map[string]string{"pipeline.classes": `negative,neutral`}), batches: [][]row{pipelineRows(0, 1)}}), args: all},
		{name: "err_missing_score", files: one(arrowFile{cols: withCols(map[string]arrow.DataType{"score": nil}), meta: pipelineMeta(), batches: [][]row{pipelineRows(0, 1)}}), args: []string{partFile}},
		{name: "err_score_type", files: one(arrowFile{cols: withCols(map[string]arrow.DataType{"score": tUTF8}), meta: pipelineMeta(), batches: [][]row{{{"text": "a", "label": "b", "score": "0.5"}}}}), args: []string{partFile}},
		{name: "err_no_partition", files: func(t testing.TB) map[string][]byte {
			return map[string][]byte{"preds/part-0.arrow": arrowFile{cols: pipelineCols(), meta: withMeta(map[string]string{"pipeline.partition": ""}), batches: [][]row{pipelineRows(0, 1)}}.encode(t)}
		}, args: []string{"-fields", "partition", "preds/part-0.arrow"}},
		{name: "err_bad_partition_metadata", files: one(arrowFile{cols: pipelineCols(), meta: withMeta(map[string]string{"pipeline.partition": "2026-13-01"}), batches: [][]row{pipelineRows(0, 1)}}), args: all},
		{name: "err_schema_version", files: one(arrowFile{cols: pipelineCols(), meta: withMeta(map[string]string{"pipeline.schema_version": "2"}), batches: [][]row{pipelineRows(0, 1)}}), args: []string{partFile}},
		{name: "err_missing_input", files: one(std()), args: []string{"preds/nope.arrow"}},
		{name: "err_zero_bytes", files: func(t testing.TB) map[string][]byte { return map[string][]byte{"x.arrow": nil} }, args: []string{"x.arrow"}},
		{name: "err_not_arrow", files: func(t testing.TB) map[string][]byte {
			return map[string][]byte{"x.arrow": []byte("id,text,label\n1,hello,pos\n")}
		}, args: []string{"x.arrow"}},
		{name: "err_truncated_file", files: func(t testing.TB) map[string][]byte {
			b := std(pipelineRows(0, 10)).encode(t)
			return map[string][]byte{"x.arrow": b[:len(b)-40]}
		}, args: []string{"x.arrow"}},
		{name: "err_truncated_stream", files: func(t testing.TB) map[string][]byte {
			b := arrowFile{cols: pipelineCols(), meta: pipelineMeta(), batches: [][]row{pipelineRows(0, 10), pipelineRows(10, 10)}, stream: true}.encode(t)
			return map[string][]byte{"x.arrows": b[:len(b)-300]}
		}, args: []string{"x.arrows"}},
		{name: "err_second_input_after_output", files: func(t testing.TB) map[string][]byte {
			return map[string][]byte{"a.arrow": std(pipelineRows(0, 2)).encode(t), "b.arrow": std(rowsWith(2, 1, row{"score": 2.0})).encode(t)}
		}, args: []string{"a.arrow", "b.arrow"}},
	}
	for name, typ := range strTypes {
		cases = append(cases, exportCase{
			name: "strings_" + name,
			files: one(arrowFile{cols: withCols(map[string]arrow.DataType{"text": typ, "label": typ, "id": typ, "model_version": typ}), meta: pipelineMeta(),
				batches: [][]row{append(fullEscapes(escapes[:4]), pipelineRows(3, 2)...)}}),
			args: []string{"-fields", "id,text,label,model_version", partFile},
		})
		cases = append(cases, exportCase{
			name: "stream_strings_" + name,
			files: one(arrowFile{cols: withCols(map[string]arrow.DataType{"text": typ, "label": typ, "id": typ, "model_version": typ}), meta: pipelineMeta(),
				batches: [][]row{pipelineRows(0, 3), fullEscapes(escapes[:4]), nil, pipelineRows(3, 2)}, stream: true}),
			args: []string{"-fields", "id,text,label,model_version", partFile},
		})
	}
	return cases
}

func TestExport(t *testing.T) {
	for _, c := range exportCases() {
		t.Run(c.name, func(t *testing.T) {
			dir := c.write(t)
			out, err := runCmd(t, dir, c.args...)
			got := out
			if err != nil {
				got += "--- error: " + err.Error() + "\n"
			}
			golden(t, c.name, got)
			if strings.HasPrefix(c.name, "err_") != (err != nil) {
				t.Errorf("error = %v", err)
			}
			var ue *usageError
			if errors.As(err, &ue) {
				t.Errorf("usage error for bad input: %v", err)
			}
			checkContract(t, out, c.args)
		})
	}
}

// checkContract checks every object of an ndjson or json output against
// shared/contracts/prediction_result.schema.json (by hand).
func checkContract(t *testing.T, out string, args []string) {
	t.Helper()
	isJSON := false
	for i, a := range args {
		if a == "-format" && args[i+1] == "json" {
			isJSON = true
		}
	}
	var objs []json.RawMessage
	if isJSON {
		if out == "" {
			return // an error before anything was written
		}
		if err := json.Unmarshal([]byte(out), &objs); err != nil {
			t.Fatalf("output is not a JSON array: %v", err)
		}
	} else {
		sc := bufio.NewScanner(strings.NewReader(out))
		sc.Buffer(nil, 1<<30)
		for sc.Scan() {
			objs = append(objs, json.RawMessage(sc.Text()))
		}
	}
	for _, o := range objs {
		if err := validateContract(o); err != nil {
			t.Errorf("%s: %v", o, err)
		}
	}
}

var partitionPattern = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}$`)

// validateContract checks one object against the PredictionResult schema.
func validateContract(raw []byte) error {
	if !json.Valid(raw) {
		return errors.New("invalid JSON")
	}
	var obj map[string]any
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&obj); err != nil {
		return fmt.Errorf("not an object: %v", err)
	}
	for _, k := range []string{"text", "label", "score"} {
		if _, ok := obj[k]; !ok {
			// -fields may leave required keys out on purpose; only check
			// the keys that are there
			_ = k
		}
	}
	prob := func(v any) error {
		f, ok := v.(float64)
		if !ok || f < 0 || f > 1 {
			return fmt.Errorf("%v is not a number in [0, 1]", v)
		}
		return nil
	}
	nonEmpty := func(v any) error {
		s, ok := v.(string)
		if !ok || s == "" {
			return fmt.Errorf("%v is not a non-empty string", v)
		}
		return nil
	}
	for k, v := range obj {
		var err error
		switch k {
		case "text":
			if _, ok := v.(string); !ok {
				err = errors.New("not a string")
			}
		case "label", "id", "model_version":
			err = nonEmpty(v)
		case "score":
			err = prob(v)
		case "scored_at":
			s, _ := v.(string)
			var ts time.Time
			if ts, err = time.Parse(time.RFC3339Nano, s); err == nil && !strings.HasSuffix(s, "Z") {
				err = fmt.Errorf("%q is not UTC", s)
			}
			_ = ts
		case "partition":
			s, _ := v.(string)
			if !partitionPattern.MatchString(s) {
				err = fmt.Errorf("%q does not match YYYY-MM-DD", s)
			}
		case "probs":
			m, ok := v.(map[string]any)
			if !ok {
				err = errors.New("not an object")
			}
			for _, p := range m {
				if err == nil {
					err = prob(p)
				}
			}
		default:
			err = errors.New("additional property")
		}
		if err != nil {
			return fmt.Errorf("%q: %v", k, err)
		}
	}
	return nil
}

// TestNoLeaks exports every case, its command line parsed as run parses it,
// with a checked allocator and asserts that every byte the Arrow readers
// allocated was released, also after errors.
func TestNoLeaks(t *testing.T) {
	for _, c := range exportCases() {
		t.Run(c.name, func(t *testing.T) {
			dir := c.write(t)
			cfg, _, err := parseArgs(c.args)
			if err != nil {
				t.Fatal(err)
			}
			var inputs []string // not in place: cfg.inputs shares the cases' args
			for _, in := range cfg.inputs {
				inputs = append(inputs, filepath.Join(dir, in))
			}
			cfg.inputs = inputs
			mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
			cfg.alloc = mem
			var out bytes.Buffer
			err = exportTo(t.Context(), &out, cfg)
			mem.AssertSize(t, 0)
			if strings.HasPrefix(c.name, "err_") != (err != nil) {
				t.Errorf("error = %v", err)
			}
			if want, _ := os.ReadFile(filepath.Join("testdata", "golden", c.name+".golden")); err == nil && out.String() != string(want) {
				t.Errorf("output differs from testdata/golden/%s.golden", c.name)
			}
		})
	}
}

var corpus = flag.String("corpus", "", "write the input files of every export case and fuzz seed, and one large file, under this folder (for testdata/compare_binaries.sh)")

// TestWriteCorpus writes, with -corpus DIR, the inputs that
// testdata/compare_binaries.sh runs two builds of the exporter over.
func TestWriteCorpus(t *testing.T) {
	if *corpus == "" {
		t.Skip("only with -corpus DIR")
	}
	for _, c := range exportCases() {
		for p, b := range c.files(t) {
			writeFile(t, filepath.Join(*corpus, "cases", c.name, p), b)
		}
	}
	for name, b := range fuzzSeeds(t) {
		writeFile(t, filepath.Join(*corpus, "seeds", "date=2026-01-04", name+".arrow"), b)
	}
	writeFile(t, filepath.Join(*corpus, "large", "date=2026-01-04", "large.arrow"), benchFile().encode(t))
}
