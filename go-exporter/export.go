package main

// Reading: flags, inputs, the Arrow readers, the ordered parallel pipeline
// and the atomic output file.

import (
	"bufio"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0"

//go:embed main.go
var mainSource string

// manual returns the package doc comment of main.go as plain text.
func manual() string {
	var sb strings.Builder
	for _, line := range strings.Split(mainSource, "\n") {
		if strings.HasPrefix(line, "package ") {
			break
		}
		if strings.HasPrefix(line, "//go:") || !strings.HasPrefix(line, "//") {
			continue
		}
		line = strings.TrimPrefix(line, "//")
		line = strings.TrimPrefix(line, " ")
		sb.WriteString(line)
		sb.WriteByte('\n')
	}
	return sb.String()
}

// usageError is a bad command line (exit status 2).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg + " (go-exporter -h for help)" }

// Field names, in the order of the contract.
const (
	fText = iota
	fLabel
	fScore
	fID
	fModelVersion
	fScoredAt
	fPartition
	fProbs
)

var expectedType = map[int]string{
	fText:         "strings",
	fLabel:        "strings",
	fID:           "strings",
	fScore:        "float32 or float64",
	fScoredAt:     "timestamps",
	fProbs:        "lists of float32 or float64",
	fModelVersion: "strings",
}

var fieldNames = []string{"text", "label", "score", "id", "model_version", "scored_at", "partition", "probs"}

func parseFields(s string) ([]int, error) {
	var fields []int
	seen := map[int]bool{}
	for _, name := range strings.Split(s, ",") {
		name = strings.TrimSpace(name)
		k := -1
		for i, n := range fieldNames {
			if n == name {
				k = i
			}
		}
		if k < 0 {
			return nil, &usageError{fmt.Sprintf("-fields: unknown field %q, expected some of %s", name, strings.Join(fieldNames, ","))}
		}
		if seen[k] {
			return nil, &usageError{fmt.Sprintf("-fields: field %q given twice", name)}
		}
		seen[k] = true
		fields = append(fields, k)
	}
	return fields, nil
}

// config is what the command line asks for.
type config struct {
	fields    []int
	json      bool // one JSON array rather than NDJSON
	output    string
	inputs    []string
	workers   int
	maxBuffer int64            // largest single allocation; <= 0: derived from the input size
	alloc     memory.Allocator // nil: memory.DefaultAllocator
}

// run executes the command line args (without the program name).
func run(ctx context.Context, stdout, stderr io.Writer, args []string) error {
	fs := flag.NewFlagSet("go-exporter", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	out := fs.String("o", "", "")
	format := fs.String("format", "ndjson", "")
	fields := fs.String("fields", "text,label,score", "")
	showVersion := fs.Bool("version", false, "")
	workers := fs.Int("workers", 0, "")
	maxBuffer := fs.Int64("max-buffer", 0, "")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			_, werr := io.WriteString(stdout, manual())
			return werr
		}
		return &usageError{err.Error()}
	}
	if *showVersion {
		_, err := fmt.Fprintf(stdout, "go-exporter %s\n", version)
		return err
	}
	cfg := config{output: *out, inputs: fs.Args(), workers: *workers, maxBuffer: *maxBuffer}
	switch *format {
	case "ndjson":
	case "json":
		cfg.json = true
	default:
		return &usageError{fmt.Sprintf("-format: unknown format %q, expected ndjson or json", *format)}
	}
	var err error
	if cfg.fields, err = parseFields(*fields); err != nil {
		return err
	}
	if len(cfg.inputs) == 0 {
		return &usageError{"no INPUT given"}
	}
	if cfg.workers <= 0 {
		cfg.workers = runtime.GOMAXPROCS(0)
	}
	return export(ctx, stdout, cfg)
}

// export writes the inputs to cfg.output (atomically) or to stdout.
func export(ctx context.Context, stdout io.Writer, cfg config) error {
	if cfg.output == "" {
		return exportTo(ctx, stdout, cfg)
	}
	dir, base := filepath.Split(cfg.output)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return fmt.Errorf("%s: %w", cfg.output, err)
	}
	done := false
	defer func() {
		if !done {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := exportTo(ctx, tmp, cfg); err != nil {
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		return fmt.Errorf("%s: %w", cfg.output, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("%s: %w", cfg.output, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("%s: %w", cfg.output, err)
	}
	if err := os.Rename(tmp.Name(), cfg.output); err != nil {
		return fmt.Errorf("%s: %w", cfg.output, err)
	}
	done = true
	if d, err := os.Open(dir); err == nil { // make the rename durable
		d.Sync()
		d.Close()
	}
	return nil
}

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

// task is one step of the ordered pipeline, in output order: the encoding of
// rows [lo, hi) of one batch (done by a worker), an error, or an action
// (release a batch, close an input) that runs when the writer reaches it,
// that is once every task before it is done.
type task struct {
	done   chan struct{} // closed when out and err are set
	enc    *batchEncoder
	lo, hi int
	out    *[]byte
	err    error
	after  func()
}

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// chunkBytes is about how much JSON one task writes: big enough that the
// cost of a task is nothing, small enough that the tasks in flight take
// little memory.
const chunkBytes = 1 << 20

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, chunkBytes+chunkBytes/4); return &b }}

func putBuf(b *[]byte) {
	if b != nil && cap(*b) <= 8*chunkBytes {
		*b = (*b)[:0]
		bufPool.Put(b)
	}
}

// queue hands tasks to the writer (ordered) and to the workers (work).
type queue struct {
	ordered chan<- *task
	work    chan<- *task
}

func (q queue) fail(err error) { q.ordered <- &task{done: closedChan, err: err} }
func (q queue) after(f func()) { q.ordered <- &task{done: closedChan, after: f} }
func (q queue) encode(t *task) { t.done = make(chan struct{}); q.ordered <- t; q.work <- t }

// exportTo streams all inputs to w. The inputs' batches are read one after
// the other; each batch is cut into parts of about chunkBytes of JSON,
// which cfg.workers goroutines encode while the writer writes the finished
// parts in input order:
//
//	producer: read batch i --> parts i.0 i.1 ... i.k, release i --> read batch i+1 ...
//	               |                  |
//	               v                  v (work)
//	           ordered queue     workers 1..N encode parts
//	               |
//	writer: wait for the head task, write its JSON or run its action
//
// The ordered queue holds at most 2*workers tasks, so about two batches and
// 2*workers+2 parts of JSON are in memory at a time, however large the input.
func exportTo(ctx context.Context, w io.Writer, cfg config) error {
	files, err := expandInputs(cfg.inputs)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	ordered := make(chan *task, 2*cfg.workers)
	work := make(chan *task, 2*cfg.workers)
	var wg sync.WaitGroup
	for range cfg.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for t := range work {
				if err := ctx.Err(); err != nil {
					t.err = err
				} else {
					t.out = bufPool.Get().(*[]byte)
					t.err = protect(func() error {
						var err error
						*t.out, err = t.enc.encodeRows((*t.out)[:0], t.lo, t.hi)
						return err
					})
					var fe *fileError
					if t.err != nil && !errors.As(t.err, &fe) { // a panic
						t.err = &fileError{t.enc.path, t.enc.batch, t.err}
					}
				}
				close(t.done)
			}
		}()
	}
	go func() {
		defer close(ordered)
		defer close(work)
		q := queue{ordered, work}
		for _, f := range files {
			if ctx.Err() != nil {
				return
			}
			produceFile(ctx, cfg, f, q)
		}
	}()

	bw := bufio.NewWriterSize(w, 256<<10)
	first := true
	var outErr error
	for t := range ordered {
		<-t.done
		if t.after != nil {
			t.after()
			continue
		}
		if outErr == nil {
			outErr = t.err
			if outErr == nil && t.out != nil && len(*t.out) > 0 {
				b := *t.out
				if cfg.json && first {
					// replace the leading ",\n" of the first object
					_, outErr = bw.WriteString("[\n")
					b = b[2:]
				}
				first = false
				if outErr == nil {
					if _, err := bw.Write(b); err != nil {
						outErr = fmt.Errorf("writing output: %w", err)
					}
				}
			}
			if outErr == nil {
				outErr = ctx.Err()
			}
			if outErr != nil {
				cancel()
			}
		}
		putBuf(t.out)
	}
	wg.Wait()
	if outErr != nil {
		bw.Flush() // the rows before the bad one
		return outErr
	}
	if cfg.json {
		end := "\n]\n"
		if first {
			end = "[]\n"
		}
		if _, err := bw.WriteString(end); err != nil {
			return fmt.Errorf("writing output: %w", err)
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("writing output: %w", err)
	}
	return nil
}

// pathError turns "open FILE: reason" into "FILE: reason".
func pathError(path string, err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return &fileError{path, -1, pe.Err}
	}
	return &fileError{path, -1, err}
}

// fileError is an error about one input file, and where applicable one
// batch of it.
type fileError struct {
	file  string
	batch int // < 0: not about one batch
	err   error
}

func (e *fileError) Error() string {
	if e.batch < 0 {
		return fmt.Sprintf("%s: %v", e.file, e.err)
	}
	return fmt.Sprintf("%s: batch %d, %v", e.file, e.batch, e.err)
}

func (e *fileError) Unwrap() error { return e.err }

// protect runs f and turns a panic into an error.
func protect(f func() error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			if e, ok := p.(error); ok && errors.Is(e, errAllocLimit) {
				err = e
				return
			}
			err = fmt.Errorf("invalid Arrow data: %v", p)
		}
	}()
	return f()
}

// queueBatch queues the encoding of rec, cut into parts, and its release.
func queueBatch(q queue, p *plan, rec arrow.RecordBatch, path string, batch int) {
	defer q.after(rec.Release)
	enc, err := newBatchEncoder(p, rec, path, batch)
	if err != nil {
		q.fail(err)
		return
	}
	n := int(rec.NumRows())
	step := chunkRows(rec, p.cols, n)
	for lo := 0; lo < n; lo += step {
		q.encode(&task{enc: enc, lo: lo, hi: min(lo+step, n)})
	}
}

// chunkRows returns how many rows of rec make about chunkBytes of JSON.
func chunkRows(rec arrow.RecordBatch, cols []int, n int) int {
	if n <= 0 {
		return 1
	}
	size := int64(0)
	for _, c := range cols {
		if c >= 0 && c < int(rec.NumCols()) {
			size += dataSize(rec.Column(c).Data(), 0)
		}
	}
	perRow := size/int64(n) + 16 // plus keys and punctuation
	rows := int64(chunkBytes) / perRow
	return int(max(64, min(rows, int64(n))))
}

// dataSize is the number of bytes in the buffers of d.
func dataSize(d arrow.ArrayData, depth int) int64 {
	if d == nil || depth > 8 {
		return 0
	}
	size := int64(0)
	for _, b := range d.Buffers() {
		if b != nil {
			size += int64(b.Len())
		}
	}
	for _, c := range d.Children() {
		size += dataSize(c, depth+1)
	}
	return size
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

// plan says how to write the rows of one input: for each field its key, its
// column (or -1) and, for fields that come from metadata, its value.
type plan struct {
	schema  *arrow.Schema
	fields  []int
	keys    [][]byte // `{"name":` for the first field, `,"name":` after
	cols    []int
	consts  []constEncoder
	classes []string
	ckeys   [][]byte // `"class":`
	anchor  int      // column that gives the row count
	prefix  string   // before each object
	suffix  string   // after each object
}

func (p *plan) sameSchema(s *arrow.Schema) bool {
	return s == p.schema || s.Equal(p.schema)
}

// isDate reports whether s is a date YYYY-MM-DD.
func isDate(s string) bool {
	if len(s) != 10 {
		return false
	}
	_, err := time.Parse("2006-01-02", s)
	return err == nil
}

func newPlan(schema *arrow.Schema, path string, cfg config) (*plan, error) {
	p := &plan{schema: schema, fields: cfg.fields, anchor: -1, prefix: "", suffix: "\n"}
	if cfg.json {
		p.prefix, p.suffix = ",\n", ""
	}
	md := schema.Metadata()
	meta := func(k string) (string, bool) {
		i := md.FindKey(k)
		if i < 0 {
			return "", false
		}
		return md.Values()[i], true
	}
	if v, ok := meta("pipeline.schema_version"); ok && v != "1" {
		return nil, fmt.Errorf("schema metadata pipeline.schema_version is %q, expected \"1\"", v)
	}
	for i, f := range cfg.fields {
		name := fieldNames[f]
		key := []byte{','}
		if i == 0 {
			key[0] = '{'
		}
		key = appendString(key, []byte(name))
		key = append(key, ':')
		p.keys = append(p.keys, key)
		col := -1
		if idx := schema.FieldIndices(name); len(idx) > 0 {
			col = idx[0]
		}
		var c constEncoder
		switch f {
		case fPartition:
			col = -1
			v, ok := meta("pipeline.partition")
			if ok {
				if !isDate(v) {
					return nil, fmt.Errorf("schema metadata pipeline.partition is %q, expected a date YYYY-MM-DD", v)
				}
			} else if v, ok = partitionFromPath(path); !ok {
				return nil, errors.New(`field "partition": no schema metadata pipeline.partition and no date=YYYY-MM-DD folder in the path`)
			}
			c = appendString(nil, []byte(v))
		case fModelVersion:
			if col < 0 {
				v, ok := meta("pipeline.model_version")
				if !ok || v == "" {
					return nil, errors.New(`column "model_version": missing, and no schema metadata pipeline.model_version either`)
				}
				c = appendString(nil, []byte(v))
			}
		case fProbs:
			v, ok := meta("pipeline.classes")
			if !ok {
				return nil, errors.New(`field "probs": no schema metadata pipeline.classes, expected a JSON array of the class names`)
			}
			var classes []string
			if err := json.Unmarshal([]byte(v), &classes); err != nil || len(classes) == 0 {
				return nil, fmt.Errorf("schema metadata pipeline.classes is %q, expected a non-empty JSON array of strings", truncate(v, 80))
			}
			seen := map[string]bool{}
			for _, c := range classes {
				if seen[c] {
					return nil, fmt.Errorf("schema metadata pipeline.classes names %q twice, expected distinct class names", c)
				}
				seen[c] = true
				p.ckeys = append(p.ckeys, append(appendString(nil, []byte(c)), ':'))
			}
			p.classes = classes
			if col < 0 {
				return nil, fmt.Errorf(`column "probs": missing, expected a column of %s`, expectedType[f])
			}
		default:
			if col < 0 {
				return nil, fmt.Errorf("column %q: missing, expected a column of %s", name, expectedType[f])
			}
		}
		p.cols = append(p.cols, col)
		p.consts = append(p.consts, c)
		if col >= 0 && p.anchor < 0 {
			p.anchor = col
		}
	}
	if p.anchor < 0 {
		// Only metadata fields: the text column still gives the row count.
		idx := schema.FieldIndices("text")
		if len(idx) == 0 {
			return nil, errors.New(`column "text": missing (it gives the number of rows)`)
		}
		p.anchor = idx[0]
	}
	return p, nil
}

// partitionFromPath finds the last date=YYYY-MM-DD component of path.
func partitionFromPath(path string) (string, bool) {
	parts := strings.Split(filepath.ToSlash(filepath.Clean(path)), "/")
	for i := len(parts) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(parts[i], "date="); ok && isDate(v) {
			return v, true
		}
	}
	return "", false
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// batchEncoder writes the rows of one record batch; its column encoders
// only read, so workers can encode parts of the batch at the same time.
type batchEncoder struct {
	p     *plan
	encs  []colEncoder
	path  string
	batch int
}

// newBatchEncoder checks the layout of the columns of rec that the fields
// need and returns their encoders.
func newBatchEncoder(p *plan, rec arrow.RecordBatch, path string, batch int) (*batchEncoder, error) {
	wrap := func(err error) error { return &fileError{path, batch, err} }
	e := &batchEncoder{p: p, path: path, batch: batch}
	nrows := rec.NumRows()
	if nrows == 0 {
		return e, nil // some writers leave even the offsets out of empty batches
	}
	if int(rec.NumCols()) != len(p.schema.Fields()) {
		return nil, wrap(corrupt("%d columns, expected %d", rec.NumCols(), len(p.schema.Fields())))
	}
	encs := make([]colEncoder, len(p.fields))
	check := func(col int) error {
		arr := rec.Column(col)
		if int64(arr.Len()) != nrows {
			return &valueError{-1, rec.ColumnName(col), corrupt("%d values in a batch of %d rows", arr.Len(), nrows).Error()}
		}
		return nil
	}
	for i, f := range p.fields {
		col := p.cols[i]
		if col < 0 {
			encs[i] = p.consts[i]
			continue
		}
		if err := check(col); err != nil {
			return nil, wrap(err)
		}
		arr := rec.Column(col)
		name := fieldNames[f]
		var err error
		switch f {
		case fText, fLabel, fID, fModelVersion:
			var r strReader
			if r, err = newStrReader(arr); err == nil {
				encs[i] = &stringEncoder{r: r, column: name, nonEmpty: f != fText}
			}
		case fScore:
			var r floatReader
			if r, err = newFloatReader(arr, arr.Len()); err == nil {
				encs[i] = &scoreEncoder{r: r, column: name}
			}
		case fScoredAt:
			encs[i], err = newTimeEncoder(arr, name)
		case fProbs:
			encs[i], err = newProbsEncoder(arr, name, p.classes, p.ckeys)
		}
		if err != nil {
			return nil, wrap(&valueError{-1, name, err.Error()})
		}
	}
	if !containsCol(p.cols, p.anchor) {
		// Only metadata fields: the text column bounds the row count.
		if err := check(p.anchor); err != nil {
			return nil, wrap(err)
		}
		if _, err := newStrReader(rec.Column(p.anchor)); err != nil {
			return nil, wrap(&valueError{-1, rec.ColumnName(p.anchor), err.Error()})
		}
	}
	e.encs = encs
	return e, nil
}

// encodeRows appends the JSON of rows [lo, hi) to b.
func (e *batchEncoder) encodeRows(b []byte, lo, hi int) ([]byte, error) {
	p := e.p
	for row := lo; row < hi; row++ {
		b = append(b, p.prefix...)
		for i, enc := range e.encs {
			b = append(b, p.keys[i]...)
			var err error
			if b, err = enc.appendValue(b, row); err != nil {
				return b, &fileError{e.path, e.batch, err}
			}
		}
		b = append(b, '}')
		b = append(b, p.suffix...)
	}
	return b, nil
}

func containsCol(cols []int, c int) bool {
	for _, x := range cols {
		if x == c {
			return true
		}
	}
	return false
}

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
