package main

// Column encoders: each checks one column's values against the
// PredictionResult contract and writes them as JSON.

import (
	"fmt"
	"math"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
)

// colEncoder writes the JSON value of one column of one record batch.
type colEncoder interface {
	appendValue(b []byte, row int) ([]byte, error)
}

// ---- strings ----

// stringEncoder writes a string column; nonEmpty rejects "".
type stringEncoder struct {
	r        strReader
	column   string
	nonEmpty bool
}

func (e *stringEncoder) appendValue(b []byte, row int) ([]byte, error) {
	s, null, err := e.r.str(row)
	if err != nil {
		return b, &valueError{row, e.column, err.Error()}
	}
	if null {
		return b, &valueError{row, e.column, "null, expected a string"}
	}
	if e.nonEmpty && len(s) == 0 {
		return b, &valueError{row, e.column, "empty string, expected a non-empty string"}
	}
	return appendString(b, s), nil
}

// ---- scores ----

// checkProb returns "" if f is a number in [0, 1], else what is wrong.
func checkProb(f float64, bits int) string {
	if f >= 0 && f <= 1 {
		return ""
	}
	var s string
	switch {
	case math.IsNaN(f):
		s = "NaN"
	case math.IsInf(f, 1):
		s = "+Inf"
	case math.IsInf(f, -1):
		s = "-Inf"
	default:
		s = string(appendFloat(nil, f, bits))
	}
	return s + ", expected a number in [0, 1]"
}

type scoreEncoder struct {
	r      floatReader
	column string
}

func (e *scoreEncoder) appendValue(b []byte, row int) ([]byte, error) {
	f, null := e.r.float(row)
	if null {
		return b, &valueError{row, e.column, "null, expected a number in [0, 1]"}
	}
	if msg := checkProb(f, e.r.bits()); msg != "" {
		return b, &valueError{row, e.column, msg}
	}
	return appendFloat(b, f, e.r.bits()), nil
}

// ---- timestamps ----

type timeEncoder struct {
	valid  bitmap
	vals   []arrow.Timestamp
	unit   arrow.TimeUnit
	column string
}

func newTimeEncoder(arr arrow.Array, column string) (colEncoder, error) {
	ts, ok := arr.DataType().(*arrow.TimestampType)
	if !ok {
		return nil, fmt.Errorf("type %s, expected a timestamp", arr.DataType())
	}
	d, valid, err := checkedData(arr)
	if err != nil {
		return nil, err
	}
	v, err := fixedValues[arrow.Timestamp](d, 1, d.Len())
	if err != nil {
		return nil, err
	}
	return &timeEncoder{valid: valid, vals: v, unit: ts.Unit, column: column}, nil
}

func (e *timeEncoder) appendValue(b []byte, row int) ([]byte, error) {
	if e.valid.isNull(row) {
		return b, &valueError{row, e.column, "null, expected a timestamp"}
	}
	t := e.vals[row].ToTime(e.unit).UTC()
	if y := t.Year(); y < 0 || y > 9999 {
		return b, &valueError{row, e.column, fmt.Sprintf("year %d, expected a timestamp in years 0000 to 9999", y)}
	}
	return appendTime(b, t), nil
}

// ---- probs ----

// probsEncoder writes a list of K probabilities as an object keyed by the
// class names; keys[j] is the encoded `"name":` of class j.
type probsEncoder struct {
	valid  bitmap
	offs   func(row int) (lo, hi int64) // range of row's values in vals
	vals   floatReader
	nvals  int64
	keys   [][]byte
	names  []string
	column string
}

func newProbsEncoder(arr arrow.Array, column string, names []string, keys [][]byte) (colEncoder, error) {
	d, valid, err := checkedData(arr)
	if err != nil {
		return nil, err
	}
	n := d.Len()
	switch arr.DataType().ID() {
	case arrow.FIXED_SIZE_LIST, arrow.LIST, arrow.LARGE_LIST:
	default:
		return nil, fmt.Errorf("type %s, expected a fixed_size_list, list or large_list of float32 or float64", arr.DataType())
	}
	children := d.Children()
	if len(children) != 1 || children[0] == nil {
		return nil, corrupt("list without one child array")
	}
	child := array.MakeFromData(children[0])
	defer child.Release()
	vals, err := newFloatReader(child, children[0].Len())
	if err != nil {
		switch child.DataType().ID() {
		case arrow.FLOAT32, arrow.FLOAT64:
			return nil, fmt.Errorf("list values: %w", err)
		}
		return nil, fmt.Errorf("list of %s, expected a list of float32 or float64", child.DataType())
	}
	e := &probsEncoder{valid: valid, vals: vals, nvals: int64(children[0].Len()), keys: keys, names: names, column: column}
	K := int64(len(names))
	switch t := arr.DataType().(type) {
	case *arrow.FixedSizeListType:
		if int64(t.Len()) != K {
			return nil, fmt.Errorf("fixed_size_list of %d values, expected %d (one for each class in pipeline.classes)", t.Len(), K)
		}
		off := int64(d.Offset())
		e.offs = func(row int) (int64, int64) { return (off + int64(row)) * K, (off + int64(row) + 1) * K }
	case *arrow.ListType:
		o, err := fixedValues[int32](d, 1, n+1)
		if err != nil {
			return nil, err
		}
		e.offs = func(row int) (int64, int64) { return int64(o[row]), int64(o[row+1]) }
	case *arrow.LargeListType:
		o, err := fixedValues[int64](d, 1, n+1)
		if err != nil {
			return nil, err
		}
		e.offs = func(row int) (int64, int64) { return o[row], o[row+1] }
	default:
		return nil, fmt.Errorf("type %s, expected a fixed_size_list, list or large_list of float32 or float64", arr.DataType())
	}
	return e, nil
}

func (e *probsEncoder) appendValue(b []byte, row int) ([]byte, error) {
	if e.valid.isNull(row) {
		return b, &valueError{row, e.column, "null, expected a list of probabilities"}
	}
	lo, hi := e.offs(row)
	if lo < 0 || hi < lo || hi > e.nvals {
		return b, &valueError{row, e.column, corrupt("list offsets [%d, %d] outside values of length %d", lo, hi, e.nvals).Error()}
	}
	if hi-lo != int64(len(e.keys)) {
		return b, &valueError{row, e.column, fmt.Sprintf("%d probabilities, expected %d (one for each class in pipeline.classes)", hi-lo, len(e.keys))}
	}
	b = append(b, '{')
	for j := range e.keys {
		f, null := e.vals.float(int(lo) + j)
		if null {
			return b, &valueError{row, e.column, fmt.Sprintf("class %q: null, expected a number in [0, 1]", e.names[j])}
		}
		if msg := checkProb(f, e.vals.bits()); msg != "" {
			return b, &valueError{row, e.column, fmt.Sprintf("class %q: %s", e.names[j], msg)}
		}
		if j > 0 {
			b = append(b, ',')
		}
		b = append(b, e.keys[j]...)
		b = appendFloat(b, f, e.vals.bits())
	}
	return append(b, '}'), nil
}

// constEncoder writes the same pre-encoded value in every row.
type constEncoder []byte

func (e constEncoder) appendValue(b []byte, _ int) ([]byte, error) {
	return append(b, e...), nil
}
