package main

// The encoder of one record batch: its rows as JSON objects.

import (
	"github.com/apache/arrow-go/v18/arrow"
)

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
