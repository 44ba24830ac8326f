package main

// The JSON encoder: append-style writers for strings, numbers and times, and
// per-batch column encoders that check every value against the
// PredictionResult contract before it is written.

import (
	"fmt"
	"math"
	"strconv"
	"time"
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
)

// appendFloat appends f as a JSON number: the shortest text that reads back
// as the same float32 (bits 32) or float64 (bits 64), written like
// JavaScript and encoding/json do (plain decimals, and exponent form such as
// 1e-7 below 1e-6 or from 1e21). f must be finite. -0 is written as 0.
func appendFloat(b []byte, f float64, bits int) []byte {
	if f == 0 {
		return append(b, '0')
	}
	abs := math.Abs(f)
	format := byte('f')
	if abs < 1e-6 || abs >= 1e21 {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, bits)
	if format == 'e' {
		// clean up e-09 to e-9
		n := len(b)
		if n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}

// timeLayout writes RFC 3339 in UTC with a "Z" and the fraction of a second
// without trailing zeros (none at all for whole seconds).
const timeLayout = "2006-01-02T15:04:05.999999999Z07:00"

// appendTime appends t (in UTC) as a JSON string in timeLayout.
func appendTime(b []byte, t time.Time) []byte {
	b = append(b, '"')
	b = t.UTC().AppendFormat(b, timeLayout)
	return append(b, '"')
}

// valueError is a problem with one value (row >= 0) or with a whole column
// of a batch (row < 0). The exporter adds the file and the batch.
type valueError struct {
	row    int
	column string
	msg    string
}

func (e *valueError) Error() string {
	if e.row < 0 {
		return fmt.Sprintf("column %q: %s", e.column, e.msg)
	}
	return fmt.Sprintf("row %d, column %q: %s", e.row, e.column, e.msg)
}

// colEncoder writes the JSON value of one column of one record batch.
type colEncoder interface {
	appendValue(b []byte, row int) ([]byte, error)
}

// ---- validity bitmaps and fixed-width buffers ----

type bitmap struct {
	bits    []byte
	off     int
	allNull bool
}

func (m bitmap) isNull(i int) bool {
	if m.bits == nil {
		return m.allNull
	}
	j := m.off + i
	return m.bits[j>>3]&(1<<(j&7)) == 0
}

func corrupt(format string, args ...any) error {
	return fmt.Errorf("corrupt Arrow data: "+format, args...)
}

// validity returns the validity bitmap of d after checking its size.
func validity(d arrow.ArrayData) (bitmap, error) {
	bufs := d.Buffers()
	off, n := d.Offset(), d.Len()
	if off < 0 || n < 0 {
		return bitmap{}, corrupt("negative offset %d or length %d", off, n)
	}
	if len(bufs) == 0 || bufs[0] == nil || bufs[0].Len() == 0 {
		nulls := d.NullN()
		if nulls > 0 && nulls != n {
			return bitmap{}, corrupt("%d nulls but no validity bitmap", nulls)
		}
		return bitmap{allNull: nulls > 0}, nil
	}
	bits := bufs[0].Bytes()
	if int64(len(bits))*8 < int64(off)+int64(n) {
		return bitmap{}, corrupt("validity bitmap of %d bytes too short for %d values", len(bits), off+n)
	}
	return bitmap{bits: bits, off: off}, nil
}

type number interface {
	~int8 | ~int16 | ~int32 | ~int64 | ~uint8 | ~uint16 | ~uint32 | ~uint64 | ~float32 | ~float64
}

// fixedBytes returns the bytes of values [offset, offset+n) of buffer i of
// d, width bytes a value, after checking that the buffer is long enough.
func fixedBytes(d arrow.ArrayData, i, width, n int) ([]byte, error) {
	bufs := d.Buffers()
	off := d.Offset()
	if off < 0 || n < 0 {
		return nil, corrupt("negative offset %d or length %d", off, n)
	}
	var raw []byte
	if len(bufs) > i && bufs[i] != nil {
		raw = bufs[i].Bytes()
	}
	if off+n < 0 || off+n > len(raw)/width {
		return nil, corrupt("values buffer of %d bytes too short for %d values of %d bytes", len(raw), int64(off)+int64(n), width)
	}
	return raw[off*width : (off+n)*width], nil
}

// fixedValues returns values [offset, offset+n) of buffer i of d as type T,
// after checking that the buffer is long enough.
func fixedValues[T number](d arrow.ArrayData, i, n int) ([]T, error) {
	var zero T
	width := int(unsafe.Sizeof(zero))
	raw, err := fixedBytes(d, i, width, n)
	if err != nil || len(raw) == 0 {
		return nil, err
	}
	return unsafe.Slice((*T)(unsafe.Pointer(unsafe.SliceData(raw))), len(raw)/width), nil
}

// ---- strings ----

// strReader reads the bytes of one string-like column (utf8, large_utf8,
// utf8_view, or a dictionary of those).
type strReader interface {
	str(row int) (s []byte, null bool, err error)
}

type offsetStrings[O int32 | int64] struct {
	valid bitmap
	offs  []O // n+1 offsets
	data  []byte
}

func (c *offsetStrings[O]) str(i int) ([]byte, bool, error) {
	if c.valid.isNull(i) {
		return nil, true, nil
	}
	lo, hi := c.offs[i], c.offs[i+1]
	if lo < 0 || hi < lo || int64(hi) > int64(len(c.data)) {
		return nil, false, corrupt("string offsets [%d, %d] outside data of %d bytes", lo, hi, len(c.data))
	}
	return c.data[lo:hi], false, nil
}

type viewStrings struct {
	valid bitmap
	views []byte // 16 bytes a value
	data  [][]byte
}

func (c *viewStrings) str(i int) ([]byte, bool, error) {
	if c.valid.isNull(i) {
		return nil, true, nil
	}
	v := c.views[i*16 : i*16+16]
	size := int32(le32(v[0:4]))
	if size < 0 {
		return nil, false, corrupt("string view of negative length %d", size)
	}
	if size <= 12 {
		return v[4 : 4+size], false, nil
	}
	bi, off := int32(le32(v[8:12])), int32(le32(v[12:16]))
	if bi < 0 || int(bi) >= len(c.data) {
		return nil, false, corrupt("string view buffer index %d out of range [0, %d)", bi, len(c.data))
	}
	buf := c.data[bi]
	if off < 0 || int64(off)+int64(size) > int64(len(buf)) {
		return nil, false, corrupt("string view [%d, +%d] outside data buffer of %d bytes", off, size, len(buf))
	}
	return buf[off : off+size], false, nil
}

func le32(b []byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}

type integer interface {
	~int8 | ~int16 | ~int32 | ~int64 | ~uint8 | ~uint16 | ~uint32 | ~uint64
}

type dictStrings[I integer] struct {
	valid   bitmap
	indices []I
	dict    strReader
	dictLen int
}

func (c *dictStrings[I]) str(i int) ([]byte, bool, error) {
	if c.valid.isNull(i) {
		return nil, true, nil
	}
	k := c.indices[i]
	if k < 0 || uint64(k) >= uint64(c.dictLen) {
		return nil, false, corrupt("dictionary index %d out of range [0, %d)", k, c.dictLen)
	}
	return c.dict.str(int(k))
}

// newStrReader checks the layout of a string-like array and returns a reader
// for it, or an error that says which types are accepted.
func newStrReader(arr arrow.Array) (strReader, error) {
	d := arr.Data()
	n := d.Len()
	valid, err := validity(d)
	if err != nil {
		return nil, err
	}
	switch arr.DataType().ID() {
	case arrow.STRING, arrow.BINARY:
		offs, err := fixedValues[int32](d, 1, n+1)
		if err != nil {
			return nil, err
		}
		return &offsetStrings[int32]{valid: valid, offs: offs, data: bufBytes(d, 2)}, nil
	case arrow.LARGE_STRING, arrow.LARGE_BINARY:
		offs, err := fixedValues[int64](d, 1, n+1)
		if err != nil {
			return nil, err
		}
		return &offsetStrings[int64]{valid: valid, offs: offs, data: bufBytes(d, 2)}, nil
	case arrow.STRING_VIEW, arrow.BINARY_VIEW:
		views, err := fixedBytes(d, 1, 16, n)
		if err != nil {
			return nil, err
		}
		var data [][]byte
		for _, b := range d.Buffers()[2:] {
			if b == nil {
				data = append(data, nil)
			} else {
				data = append(data, b.Bytes())
			}
		}
		return &viewStrings{valid: valid, views: views, data: data}, nil
	case arrow.DICTIONARY:
		da, ok := arr.(*array.Dictionary)
		if !ok {
			return nil, corrupt("dictionary column of type %T", arr)
		}
		dict := da.Dictionary()
		if !isStringType(dict.DataType()) {
			return nil, fmt.Errorf("dictionary of %s, expected a dictionary of strings", dict.DataType())
		}
		dr, err := newStrReader(dict)
		if err != nil {
			return nil, err
		}
		switch da.DataType().(*arrow.DictionaryType).IndexType.ID() {
		case arrow.INT8:
			return newDict[int8](d, valid, dr, dict.Len())
		case arrow.INT16:
			return newDict[int16](d, valid, dr, dict.Len())
		case arrow.INT32:
			return newDict[int32](d, valid, dr, dict.Len())
		case arrow.INT64:
			return newDict[int64](d, valid, dr, dict.Len())
		case arrow.UINT8:
			return newDict[uint8](d, valid, dr, dict.Len())
		case arrow.UINT16:
			return newDict[uint16](d, valid, dr, dict.Len())
		case arrow.UINT32:
			return newDict[uint32](d, valid, dr, dict.Len())
		case arrow.UINT64:
			return newDict[uint64](d, valid, dr, dict.Len())
		}
	}
	return nil, fmt.Errorf("type %s, expected a string (utf8, large_utf8, utf8_view or dictionary of those)", arr.DataType())
}

func newDict[I integer](d arrow.ArrayData, valid bitmap, dict strReader, dictLen int) (strReader, error) {
	idx, err := fixedValues[I](d, 1, d.Len())
	if err != nil {
		return nil, err
	}
	return &dictStrings[I]{valid: valid, indices: idx, dict: dict, dictLen: dictLen}, nil
}

func bufBytes(d arrow.ArrayData, i int) []byte {
	bufs := d.Buffers()
	if len(bufs) <= i || bufs[i] == nil {
		return nil
	}
	return bufs[i].Bytes()
}

func isStringType(t arrow.DataType) bool {
	switch t.ID() {
	case arrow.STRING, arrow.LARGE_STRING, arrow.STRING_VIEW:
		return true
	case arrow.DICTIONARY:
		return isStringType(t.(*arrow.DictionaryType).ValueType)
	}
	return false
}

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

// ---- numbers ----

type floatReader interface {
	float(row int) (f float64, null bool)
	bits() int
}

type floats[F float32 | float64] struct {
	valid bitmap
	vals  []F
}

func (c *floats[F]) float(i int) (float64, bool) {
	if c.valid.isNull(i) {
		return 0, true
	}
	return float64(c.vals[i]), false
}

func (c *floats[F]) bits() int {
	var zero F
	return int(unsafe.Sizeof(zero)) * 8
}

func newFloatReader(arr arrow.Array, n int) (floatReader, error) {
	d := arr.Data()
	valid, err := validity(d)
	if err != nil {
		return nil, err
	}
	switch arr.DataType().ID() {
	case arrow.FLOAT64:
		v, err := fixedValues[float64](d, 1, n)
		if err != nil {
			return nil, err
		}
		return &floats[float64]{valid, v}, nil
	case arrow.FLOAT32:
		v, err := fixedValues[float32](d, 1, n)
		if err != nil {
			return nil, err
		}
		return &floats[float32]{valid, v}, nil
	}
	return nil, fmt.Errorf("type %s, expected float32 or float64", arr.DataType())
}

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
	d := arr.Data()
	valid, err := validity(d)
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
	d := arr.Data()
	n := d.Len()
	valid, err := validity(d)
	if err != nil {
		return nil, err
	}
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
