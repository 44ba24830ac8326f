package main

// Readers of Arrow buffers: validity bitmaps, fixed-width values and
// floats, each checked against the array's length before use.

import (
	"fmt"
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow"
)

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

// checkedData returns the data of arr and its validity bitmap, checked.
func checkedData(arr arrow.Array) (arrow.ArrayData, bitmap, error) {
	d := arr.Data()
	valid, err := validity(d)
	return d, valid, err
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

func bufBytes(d arrow.ArrayData, i int) []byte {
	bufs := d.Buffers()
	if len(bufs) <= i || bufs[i] == nil {
		return nil
	}
	return bufs[i].Bytes()
}

// ---- floats ----

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
	d, valid, err := checkedData(arr)
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
