package main

// Readers of string columns: utf8, large_utf8 and utf8_view, the binary
// types of the same layouts, and dictionaries of utf8 values.

import (
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
)

// strReader reads the bytes of one string-like column (utf8, large_utf8,
// utf8_view, their binary twins, or a dictionary of utf8 values).
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
// for it, or an error that names the utf8 types (binary ones are accepted
// too, unnamed).
func newStrReader(arr arrow.Array) (strReader, error) {
	d, valid, err := checkedData(arr)
	if err != nil {
		return nil, err
	}
	n := d.Len()
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
		if newDict, ok := newDictReader[da.DataType().(*arrow.DictionaryType).IndexType.ID()]; ok {
			return newDict(d, valid, dr, dict.Len())
		}
	}
	return nil, fmt.Errorf("type %s, expected a string (utf8, large_utf8, utf8_view or dictionary of those)", arr.DataType())
}

// newDictReader holds newDict for each integer index type.
var newDictReader = map[arrow.Type]func(d arrow.ArrayData, valid bitmap, dict strReader, dictLen int) (strReader, error){
	arrow.INT8: newDict[int8], arrow.INT16: newDict[int16], arrow.INT32: newDict[int32], arrow.INT64: newDict[int64],
	arrow.UINT8: newDict[uint8], arrow.UINT16: newDict[uint16], arrow.UINT32: newDict[uint32], arrow.UINT64: newDict[uint64],
}

func newDict[I integer](d arrow.ArrayData, valid bitmap, dict strReader, dictLen int) (strReader, error) {
	idx, err := fixedValues[I](d, 1, d.Len())
	if err != nil {
		return nil, err
	}
	return &dictStrings[I]{valid: valid, indices: idx, dict: dict, dictLen: dictLen}, nil
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
