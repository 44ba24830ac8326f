package main

// The export: the inputs' batches are cut into parts that workers encode in
// parallel and the writer writes in input order.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"runtime/debug"
	"sync"

	"github.com/apache/arrow-go/v18/arrow"
)

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
// The ordered queue holds at most 2*workers tasks, plus the one the writer
// waits on and the one the producer is queuing; the manual (main.go) says
// what that means for memory.
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
			debug.SetPanicOnFault(true) // see ipcInput.openFile
			for t := range work {
				if err := ctx.Err(); err != nil {
					t.err = err
				} else {
					t.out = bufPool.Get().(*[]byte)
					t.err = protectBatch(t.enc.path, t.enc.batch, func() error {
						var err error
						*t.out, err = t.enc.encodeRows((*t.out)[:0], t.lo, t.hi)
						return err
					})
				}
				close(t.done)
			}
		}()
	}
	go func() {
		defer close(ordered)
		defer close(work)
		debug.SetPanicOnFault(true)
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

// produceFile queues the tasks for one input file.
func produceFile(ctx context.Context, cfg config, path string, q queue) {
	in, err := openInput(cfg, path)
	if err != nil {
		q.fail(err)
		return
	}
	// closed when the writer gets here, after every batch was encoded
	defer q.after(in.close)
	p, err := newPlan(in.schema, path, cfg)
	if err != nil {
		q.fail(in.wrap(-1, err))
		return
	}
	for i := 0; ctx.Err() == nil; i++ {
		rec, err := in.next(i)
		if err != nil {
			q.fail(err)
			return
		}
		if rec == nil {
			return
		}
		queueBatch(q, p, rec, path, i, func() { in.release(i, rec) })
	}
}

// queueBatch queues the encoding of rec, cut into parts, and its release.
func queueBatch(q queue, p *plan, rec arrow.RecordBatch, path string, batch int, release func()) {
	defer q.after(release)
	var enc *batchEncoder
	err := protectBatch(path, batch, func() error {
		var err error
		enc, err = newBatchEncoder(p, rec, path, batch)
		return err
	})
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
