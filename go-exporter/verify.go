package main

// A minimal verifier for the flatbuffers of Arrow IPC metadata. arrow-go
// trusts the lengths written in them: it allocates a slice as long as a
// schema's field list, a field's children, a key-value list or a string
// view's variadic buffer count claims, before it reads them, so a few bytes
// of a hostile file could make it allocate tens of gigabytes. The verifier
// checks that every such vector lies inside its buffer, that tables nest at
// most maxDepth deep, and that variadic counts and body lengths are within
// what the input can hold, before arrow-go sees the bytes.

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
)

const maxDepth = 64

type fbBuf []byte

var errFB = errors.New("corrupt IPC metadata")

func (b fbBuf) u32(pos int) (int, error) {
	if pos < 0 || pos+4 > len(b) {
		return 0, errFB
	}
	return int(binary.LittleEndian.Uint32(b[pos:])), nil
}

type fbTable struct {
	b      fbBuf
	pos    int
	vt     int
	vtLen  int
	objLen int
}

// table checks the table at pos.
func (b fbBuf) table(pos int) (fbTable, error) {
	if pos < 0 || pos+4 > len(b) {
		return fbTable{}, errFB
	}
	soff := int32(binary.LittleEndian.Uint32(b[pos:]))
	vt := pos - int(soff)
	if vt < 0 || vt+4 > len(b) {
		return fbTable{}, errFB
	}
	vtLen := int(binary.LittleEndian.Uint16(b[vt:]))
	objLen := int(binary.LittleEndian.Uint16(b[vt+2:]))
	if vtLen < 4 || vtLen%2 != 0 || vt+vtLen > len(b) || objLen < 4 || pos+objLen > len(b) {
		return fbTable{}, errFB
	}
	return fbTable{b, pos, vt, vtLen, objLen}, nil
}

// field returns the position of field slot, or 0 if absent.
func (t fbTable) field(slot, size int) (int, error) {
	o := 4 + 2*slot
	if o+2 > t.vtLen {
		return 0, nil
	}
	off := int(binary.LittleEndian.Uint16(t.b[t.vt+o:]))
	if off == 0 {
		return 0, nil
	}
	if off+size > t.objLen {
		return 0, errFB
	}
	return t.pos + off, nil
}

// ref follows the offset in field slot; ok is false if absent.
func (t fbTable) ref(slot int) (int, bool, error) {
	p, err := t.field(slot, 4)
	if err != nil || p == 0 {
		return 0, false, err
	}
	off, err := t.b.u32(p)
	if err != nil {
		return 0, false, err
	}
	return p + off, true, nil
}

// vector checks the vector in field slot with elements of elem bytes and
// returns the position of its first element and its length.
func (t fbTable) vector(slot, elem int) (int, int, error) {
	p, ok, err := t.ref(slot)
	if err != nil || !ok {
		return 0, 0, err
	}
	n, err := t.b.u32(p)
	if err != nil {
		return 0, 0, err
	}
	if int64(p)+4+int64(n)*int64(elem) > int64(len(t.b)) {
		return 0, 0, errFB
	}
	return p + 4, n, nil
}

// tables checks a vector of tables with check.
func (t fbTable) tables(slot int, check func(fbTable) error) error {
	start, n, err := t.vector(slot, 4)
	if err != nil {
		return err
	}
	for i := 0; i < n; i++ {
		p := start + 4*i
		off, _ := t.b.u32(p)
		sub, err := t.b.table(p + off)
		if err != nil {
			return err
		}
		if err := check(sub); err != nil {
			return err
		}
	}
	return nil
}

func (t fbTable) sub(slot int) (fbTable, bool, error) {
	p, ok, err := t.ref(slot)
	if err != nil || !ok {
		return fbTable{}, false, err
	}
	s, err := t.b.table(p)
	return s, err == nil, err
}

func (t fbTable) i64(slot int) (int64, error) {
	p, err := t.field(slot, 8)
	if err != nil || p == 0 {
		return 0, err
	}
	return int64(binary.LittleEndian.Uint64(t.b[p:])), nil
}

func (t fbTable) u8(slot int) (int, error) {
	p, err := t.field(slot, 1)
	if err != nil || p == 0 {
		return 0, err
	}
	return int(t.b[p]), nil
}

func checkKeyValues(t fbTable, slot int) error {
	return t.tables(slot, func(kv fbTable) error {
		if _, _, err := kv.vector(0, 1); err != nil {
			return err
		}
		_, _, err := kv.vector(1, 1)
		return err
	})
}

// Schema: endianness 0, fields 1, custom_metadata 2, features 3.
func checkSchema(t fbTable) error {
	if err := t.tables(1, func(f fbTable) error { return checkField(f, 0) }); err != nil {
		return err
	}
	if err := checkKeyValues(t, 2); err != nil {
		return err
	}
	_, _, err := t.vector(3, 8)
	return err
}

// Field: name 0, nullable 1, type_type 2, type 3, dictionary 4, children 5,
// custom_metadata 6.
func checkField(f fbTable, depth int) error {
	if depth > maxDepth {
		return fmt.Errorf("%w: types nested more than %d deep", errFB, maxDepth)
	}
	if _, _, err := f.vector(0, 1); err != nil {
		return err
	}
	typ, ok, err := f.sub(3)
	if err != nil {
		return err
	}
	if ok {
		tt, err := f.u8(2)
		if err != nil {
			return err
		}
		switch tt {
		case 10: // Timestamp: unit 0, timezone 1
			if _, _, err := typ.vector(1, 1); err != nil {
				return err
			}
		case 14: // Union: mode 0, typeIds 1
			if _, _, err := typ.vector(1, 4); err != nil {
				return err
			}
		}
	}
	if dict, ok, err := f.sub(4); err != nil {
		return err
	} else if ok {
		// DictionaryEncoding: id 0, indexType 1, isOrdered 2, kind 3
		if _, _, err := dict.sub(1); err != nil {
			return err
		}
	}
	if err := f.tables(5, func(c fbTable) error { return checkField(c, depth+1) }); err != nil {
		return err
	}
	return checkKeyValues(f, 6)
}

// RecordBatch: length 0, nodes 1, buffers 2, compression 3,
// variadicBufferCounts 4.
func checkRecordBatch(t fbTable) error {
	if _, _, err := t.vector(1, 16); err != nil {
		return err
	}
	_, nbufs, err := t.vector(2, 16)
	if err != nil {
		return err
	}
	if _, _, err := t.sub(3); err != nil {
		return err
	}
	start, n, err := t.vector(4, 8)
	if err != nil {
		return err
	}
	for i := 0; i < n; i++ {
		c := int64(binary.LittleEndian.Uint64(t.b[start+8*i:]))
		if c < 0 || c > int64(nbufs) {
			return fmt.Errorf("%w: variadic buffer count %d, but %d buffers", errFB, c, nbufs)
		}
	}
	return nil
}

// checkMessage verifies a Message flatbuffer (version 0, header_type 1,
// header 2, bodyLength 3, custom_metadata 4) and returns its body length.
func checkMessage(b fbBuf) (int64, error) {
	root, err := b.u32(0)
	if err != nil {
		return 0, err
	}
	m, err := b.table(root)
	if err != nil {
		return 0, err
	}
	ht, err := m.u8(1)
	if err != nil {
		return 0, err
	}
	h, ok, err := m.sub(2)
	if err != nil {
		return 0, err
	}
	if ok {
		switch ht {
		case 1:
			err = checkSchema(h)
		case 2: // DictionaryBatch: id 0, data 1, isDelta 2
			var rb fbTable
			if rb, ok, err = h.sub(1); err == nil && ok {
				err = checkRecordBatch(rb)
			}
		case 3:
			err = checkRecordBatch(h)
		}
		if err != nil {
			return 0, err
		}
	}
	if err := checkKeyValues(m, 4); err != nil {
		return 0, err
	}
	body, err := m.i64(3)
	if err != nil {
		return 0, err
	}
	if body < 0 {
		return 0, fmt.Errorf("%w: negative body length %d", errFB, body)
	}
	return body, nil
}

type fileBlock struct {
	offset int64
	meta   int32
	body   int64
}

// checkFooter verifies the footer of an IPC file of size bytes (version 0,
// schema 1, dictionaries 2, recordBatches 3, custom_metadata 4) and the
// messages of its dictionary blocks, and returns its record batch blocks.
func checkFooter(f *os.File, size int64) ([]fileBlock, error) {
	if size < 6+2+4+6 {
		return nil, fmt.Errorf("%w: file of %d bytes too short", errFB, size)
	}
	var tail [10]byte
	if _, err := f.ReadAt(tail[:], size-10); err != nil {
		return nil, err
	}
	if string(tail[4:]) != "ARROW1" {
		return nil, errors.New("no ARROW1 at the end of the file: truncated, or not an Arrow IPC file")
	}
	flen := int64(int32(binary.LittleEndian.Uint32(tail[:4])))
	if flen <= 0 || flen > size-18 {
		return nil, fmt.Errorf("%w: footer length %d in a file of %d bytes", errFB, flen, size)
	}
	b := make(fbBuf, flen)
	if _, err := f.ReadAt(b, size-10-flen); err != nil {
		return nil, err
	}
	root, err := b.u32(0)
	if err != nil {
		return nil, err
	}
	ft, err := b.table(root)
	if err != nil {
		return nil, err
	}
	if s, ok, err := ft.sub(1); err != nil {
		return nil, err
	} else if ok {
		if err := checkSchema(s); err != nil {
			return nil, err
		}
	}
	if err := checkKeyValues(ft, 4); err != nil {
		return nil, err
	}
	blocks := func(slot int) ([]fileBlock, error) {
		start, n, err := ft.vector(slot, 24)
		if err != nil {
			return nil, err
		}
		var out []fileBlock
		for i := 0; i < n; i++ {
			p := b[start+24*i:]
			out = append(out, fileBlock{
				offset: int64(binary.LittleEndian.Uint64(p)),
				meta:   int32(binary.LittleEndian.Uint32(p[8:])),
				body:   int64(binary.LittleEndian.Uint64(p[16:])),
			})
		}
		return out, nil
	}
	dicts, err := blocks(2)
	if err != nil {
		return nil, err
	}
	for i, blk := range dicts {
		if err := checkBlock(f, size, blk); err != nil {
			return nil, fmt.Errorf("dictionary %d: %w", i, err)
		}
	}
	return blocks(3)
}

// checkBlock verifies the message of one block of an IPC file.
func checkBlock(f *os.File, size int64, blk fileBlock) error {
	if blk.offset < 0 || blk.meta < 8 || blk.body < 0 || blk.offset > size ||
		int64(blk.meta) > size-blk.offset || blk.body > size-blk.offset-int64(blk.meta) {
		return fmt.Errorf("%w: block at offset %d with metadata %d and body %d bytes outside the file of %d bytes", errFB, blk.offset, blk.meta, blk.body, size)
	}
	b := make(fbBuf, blk.meta)
	if _, err := f.ReadAt(b, blk.offset); err != nil {
		return err
	}
	if binary.LittleEndian.Uint32(b) == 0xFFFFFFFF {
		b = b[8:]
	} else {
		b = b[4:]
	}
	body, err := checkMessage(b)
	if err != nil {
		return err
	}
	if body > blk.body {
		return fmt.Errorf("%w: message body of %d bytes in a block of %d", errFB, body, blk.body)
	}
	return nil
}

// streamChecker passes an IPC stream through, verifying each message's
// metadata and that its body fits in the rest of the input.
type streamChecker struct {
	r        *bufio.Reader
	left     int64 // bytes of input not yet read
	pending  []byte
	bodyLeft int64
	eos      bool
}

func (s *streamChecker) Read(p []byte) (int, error) {
	if len(s.pending) == 0 && s.bodyLeft == 0 {
		if s.eos {
			return 0, io.EOF
		}
		if err := s.next(); err != nil {
			return 0, err
		}
	}
	if len(s.pending) > 0 {
		n := copy(p, s.pending)
		s.pending = s.pending[n:]
		return n, nil
	}
	if int64(len(p)) > s.bodyLeft {
		p = p[:s.bodyLeft]
	}
	n, err := s.r.Read(p)
	s.bodyLeft -= int64(n)
	s.left -= int64(n)
	if err == io.EOF && s.bodyLeft > 0 {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

func (s *streamChecker) next() error {
	var hdr [8]byte
	n, err := io.ReadFull(s.r, hdr[:4])
	if err != nil {
		if n == 0 && err == io.EOF {
			s.eos = true
			return io.EOF
		}
		return err
	}
	prefix := 4
	mlen := int64(binary.LittleEndian.Uint32(hdr[:4]))
	if mlen == 0xFFFFFFFF {
		if _, err := io.ReadFull(s.r, hdr[4:8]); err != nil {
			return io.ErrUnexpectedEOF
		}
		prefix = 8
		mlen = int64(binary.LittleEndian.Uint32(hdr[4:8]))
	}
	s.left -= int64(prefix)
	if mlen == 0 {
		s.pending = append([]byte(nil), hdr[:prefix]...)
		s.eos = true
		return nil
	}
	if mlen > s.left || mlen > math.MaxInt32 {
		return fmt.Errorf("%w: message metadata of %d bytes, but %d bytes left", errFB, mlen, s.left)
	}
	meta := make([]byte, prefix+int(mlen))
	copy(meta, hdr[:prefix])
	if _, err := io.ReadFull(s.r, meta[prefix:]); err != nil {
		return io.ErrUnexpectedEOF
	}
	s.left -= mlen
	body, err := checkMessage(meta[prefix:])
	if err != nil {
		return err
	}
	if body > s.left {
		return fmt.Errorf("%w: message body of %d bytes, but %d bytes left", errFB, body, s.left)
	}
	s.pending = meta
	s.bodyLeft = body
	return nil
}
