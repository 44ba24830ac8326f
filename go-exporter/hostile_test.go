package main

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/ipc"
)

// footerSchemaFields returns the position, in the file b, of the length of
// the footer schema's field vector.
func footerSchemaFields(t *testing.T, b []byte) int {
	size := len(b)
	flen := int(binary.LittleEndian.Uint32(b[size-10:]))
	start := size - 10 - flen
	fb := fbBuf(b[start : size-10])
	root, _ := fb.u32(0)
	ft, err := fb.table(root)
	if err != nil {
		t.Fatal(err)
	}
	s, _, err := ft.sub(1)
	if err != nil {
		t.Fatal(err)
	}
	p, ok, err := s.ref(1)
	if err != nil || !ok {
		t.Fatal("no fields", err)
	}
	return start + p
}

func exportBytes(t *testing.T, name string, b []byte) error {
	t.Helper()
	path := writeFile(t, filepath.Join(t.TempDir(), name), b)
	fields, _ := parseFields(allFields)
	var out bytes.Buffer
	return exportTo(t.Context(), &out, config{fields: fields, inputs: []string{path}, workers: 2})
}

// TestHostileLengths checks that lengths written in a file cannot make the
// reader allocate what the file cannot hold.
func TestHostileLengths(t *testing.T) {
	good := std(pipelineRows(0, 3)).encode(t)

	// a schema claiming 2^31-1 fields (arrow-go would allocate them first)
	b := bytes.Clone(good)
	binary.LittleEndian.PutUint32(b[footerSchemaFields(t, b):], 0x7fffffff)
	if err := exportBytes(t, "fields.arrow", b); err == nil || !strings.Contains(err.Error(), "corrupt IPC metadata") {
		t.Errorf("huge field count: %v", err)
	}

	// a stream message claiming a body of 1 TiB
	s := arrowFile{cols: pipelineCols(), meta: pipelineMeta(), batches: [][]row{pipelineRows(0, 3)}, stream: true}.encode(t)
	msgs := 0
	for pos := 0; pos+8 <= len(s); {
		if binary.LittleEndian.Uint32(s[pos:]) != 0xFFFFFFFF {
			t.Fatal("no continuation marker")
		}
		mlen := int(binary.LittleEndian.Uint32(s[pos+4:]))
		if mlen == 0 {
			break
		}
		meta := fbBuf(s[pos+8 : pos+8+mlen])
		body, err := checkMessage(meta)
		if err != nil {
			t.Fatal(err)
		}
		msgs++
		if msgs == 2 { // the record batch
			root, _ := meta.u32(0)
			m, _ := meta.table(root)
			p, _ := m.field(3, 8)
			binary.LittleEndian.PutUint64(s[pos+8+p:], 1<<40)
			break
		}
		pos += 8 + mlen + int(body)
	}
	if err := exportBytes(t, "body.arrows", s); err == nil || !strings.Contains(err.Error(), "bytes left") {
		t.Errorf("huge stream body: %v", err)
	}

	// a ZSTD buffer claiming to decompress to 1 TiB
	z := arrowFile{cols: pipelineCols(), meta: pipelineMeta(), batches: [][]row{pipelineRows(0, 3)}, opts: []ipc.Option{ipc.WithZstd()}}.encode(t)
	f := writeFile(t, filepath.Join(t.TempDir(), "z.arrow"), z)
	fh, _ := os.Open(f)
	blocks, err := checkFooter(fh, int64(len(z)))
	fh.Close()
	if err != nil || len(blocks) != 1 {
		t.Fatal(err)
	}
	blk := blocks[0]
	meta := fbBuf(z[blk.offset+8 : blk.offset+int64(blk.meta)])
	root, _ := meta.u32(0)
	m, _ := meta.table(root)
	rb, _, _ := m.sub(2)
	start, n, _ := rb.vector(2, 16)
	patched := 0
	for i := 0; i < n; i++ {
		off := int64(binary.LittleEndian.Uint64(meta[start+16*i:]))
		length := int64(binary.LittleEndian.Uint64(meta[start+16*i+8:]))
		if length >= 8 {
			binary.LittleEndian.PutUint64(z[blk.offset+int64(blk.meta)+off:], 1<<40)
			patched++
		}
	}
	if patched == 0 {
		t.Fatal("no buffer patched")
	}
	if err := exportBytes(t, "zstd.arrow", z); err == nil || !strings.Contains(err.Error(), "-max-buffer") {
		t.Errorf("huge uncompressed size: %v", err)
	}
}
