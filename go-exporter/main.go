// go-exporter converts the text pipeline's Arrow IPC prediction files to
// PredictionResult JSON (contract: shared/contracts/prediction_result.schema.json).
//
// Usage:
//
//	go-exporter [flags] INPUT...
//
// Each INPUT is an Arrow IPC file, an Arrow IPC stream, or a folder, which
// stands for its *.arrow and *.arrows files in name order (not its
// subfolders). Whether an input is a file or a stream is told from its first
// bytes ("ARROW1" starts a file), not from its name. Inputs are written one
// after the other, each batch's rows in order. Flags come before the inputs.
//
// Flags:
//
//	-o FILE         write to FILE instead of standard output. FILE is written
//	                atomically: the output goes to a temporary file in the same
//	                folder, which is synced and renamed to FILE only when all
//	                inputs were written; on any error FILE is left as it was
//	                and the temporary file is removed. FILE may not be an
//	                input, a file of a folder input, or a symbolic or hard
//	                link to one (exit status 2).
//	-format FORMAT  ndjson (default): one JSON object a line.
//	                json: one JSON array, one object a line, "[]" for no rows.
//	-fields LIST    comma-separated keys of each object, in the order given
//	                (default text,label,score). Known fields:
//	                  text           column "text"
//	                  label          column "label" (non-empty)
//	                  score          column "score", a number in [0, 1]
//	                  id             column "id" (non-empty)
//	                  model_version  column "model_version" (non-empty); if the
//	                                 column is missing, the schema metadata
//	                                 pipeline.model_version
//	                  scored_at      column "scored_at", a timestamp of any
//	                                 unit; written in UTC as RFC 3339 with "Z"
//	                                 and the fraction of a second without
//	                                 trailing zeros (none for whole seconds),
//	                                 e.g. "2026-01-04T02:00:00.123456Z"
//	                  partition      the schema metadata pipeline.partition,
//	                                 else the last date=YYYY-MM-DD folder of
//	                                 the input's path
//	                  probs          column "probs", one probability for each
//	                                 class, written as an object keyed by the
//	                                 class names listed (in the same order) in
//	                                 the schema metadata pipeline.classes
//	-version        print the version and exit.
//	-h              print this manual and exit.
//
// Two further flags are rarely needed: -workers N encodes with N goroutines
// (1 to 1024; default: the number of CPUs) and -max-buffer BYTES is the
// largest single buffer the Arrow reader may allocate for one input (at
// least 1; default: 64 times the input's size, at least 256 MiB), which
// guards against hostile files. A value out of range is a bad command line.
//
// Input:
//
// Only the columns the requested fields need must be present; others are
// ignored. Columns of strings may be utf8, large_utf8 or utf8_view, their
// binary twins binary, large_binary or binary_view (written like strings),
// or dictionaries of utf8, large_utf8 or utf8_view values with any integer
// index type. score and the values of probs may be float32 or float64
// (float32 values are written as the shortest decimal that reads back as
// the same float32); probs may be a fixed_size_list, list or large_list.
// Compressed (LZ4 or ZSTD) bodies and batches of any size are read. If the
// schema metadata has pipeline.schema_version it must be "1". When no
// requested field needs a column (e.g. -fields partition), the "text"
// column gives the number of rows. Truncated, corrupt or hostile inputs are
// rejected with exit status 1; the IPC metadata is checked before it is
// decoded.
//
// IPC files are mapped into memory where the system can (streams are read);
// a file truncated while it is exported is an error. Batches are read one
// after the other and cut into parts of about 1 MiB of JSON, which the
// workers encode in parallel and which are written in input order; the pages
// of a written batch leave the process. At most 2*workers+2 parts are in
// flight, so memory holds two batches when each is cut into 2*workers parts
// or more, and otherwise as many batches as their parts fill those places (a
// few more, but smaller), however large the input (a 2 GB pipeline file of
// 65,536-row batches exports in under 80 MB of RSS).
//
// Output:
//
// Strings are written as JSON strings with '"', '\', control characters,
// U+2028 and U+2029 escaped (no HTML escaping); every byte that is not part
// of valid UTF-8 is replaced by U+FFFD. Numbers are written as the shortest
// decimal that reads back as the same value, in plain notation between 1e-6
// and 1e21 and as e.g. 1e-7 outside it.
//
// Every value is checked: a null, an empty label, id or model_version, a
// score or probability that is NaN, infinite or outside [0, 1], a probs list
// of the wrong length, or a missing column stops the export with exit status
// 1 and a message that names the file, the batch (counted from 0), the row
// (counted from 0 within the batch) and the column, e.g.
//
//	go-exporter: preds/part-00000.arrow: batch 0, row 17, column "score": NaN, expected a number in [0, 1]
//
// Without -o, the rows before the bad one (whole batches, and possibly the
// first parts of its batch) have already been written to standard output;
// with -o nothing is written.
//
// Exit status: 0 done, 1 bad input or I/O error, 2 bad command line.
//
// Examples:
//
//	go-exporter predictions/date=2026-01-04/part-00000.arrow
//	go-exporter -fields id,label,score,partition -o out.ndjson predictions/date=2026-01-04
//	go-exporter -format json -fields id,text,label,score,probs,scored_at part-00000.arrow part-00001.arrow
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Stdout, os.Args[1:])
	stop()
	if err == nil {
		return
	}
	fmt.Fprintf(os.Stderr, "go-exporter: %v\n", err)
	var ue *usageError
	if errors.As(err, &ue) {
		os.Exit(2)
	}
	os.Exit(1)
}
