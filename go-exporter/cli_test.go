package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestUsage(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "a.arrow"), std(pipelineRows(0, 1)).encode(t))
	for _, args := range [][]string{
		{},
		{"-fields", "text,nope", "a.arrow"},
		{"-fields", "text,text", "a.arrow"},
		{"-fields", "", "a.arrow"},
		{"-format", "csv", "a.arrow"},
		{"-bogus", "a.arrow"},
	} {
		_, err := runCmd(t, dir, args...)
		var ue *usageError
		if !errors.As(err, &ue) {
			t.Errorf("%q: got %v, want a usage error", args, err)
		}
	}
	out, err := runCmd(t, dir, "-h")
	if err != nil || !strings.Contains(out, "Usage:") || !strings.Contains(out, "go-exporter -format json") {
		t.Errorf("-h: %v, %q", err, out)
	}
	out, err = runCmd(t, dir, "-version")
	if err != nil || !strings.HasPrefix(out, "go-exporter ") {
		t.Errorf("-version: %v, %q", err, out)
	}
}

func TestUsageOutOfRange(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "a.arrow"), std(pipelineRows(0, 1)).encode(t))
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-workers", "0", "a.arrow"}, "-workers 0: out of range, expected 1 to 1024"},
		{[]string{"-workers", "-3", "a.arrow"}, "-workers -3: out of range, expected 1 to 1024"},
		{[]string{"-workers", "1025", "a.arrow"}, "-workers 1025: out of range, expected 1 to 1024"},
		{[]string{"-max-buffer", "-5", "a.arrow"}, "-max-buffer -5: out of range, expected a positive number of bytes"},
		{[]string{"-max-buffer", "0", "a.arrow"}, "-max-buffer 0: out of range, expected a positive number of bytes"},
	} {
		_, err := runCmd(t, dir, c.args...)
		var ue *usageError
		if !errors.As(err, &ue) || err.Error() != c.want+" (go-exporter -h for help)" {
			t.Errorf("%q: got %v, want the usage error %q", c.args, err, c.want)
		}
	}
	for _, args := range [][]string{
		{"-workers", "1", "a.arrow"},
		{"-workers", "1024", "a.arrow"},
		{"-max-buffer", "1048576", "a.arrow"},
	} {
		if out, err := runCmd(t, dir, args...); err != nil || out == "" {
			t.Errorf("%q: %v, %q", args, err, out)
		}
	}
}

func TestOutputIsAnInput(t *testing.T) {
	dir := t.TempDir()
	data := std(pipelineRows(0, 2)).encode(t)
	writeFile(t, filepath.Join(dir, "a.arrow"), data)
	writeFile(t, filepath.Join(dir, "preds", "part-00000.arrow"), data)
	writeFile(t, filepath.Join(dir, "other.ndjson"), []byte("old\n"))
	if err := os.Symlink("a.arrow", filepath.Join(dir, "sym.arrow")); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(dir, "a.arrow"), filepath.Join(dir, "hard.arrow")); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-o", "a.arrow", "a.arrow"}, "-o a.arrow: is the input a.arrow, which the output would replace"},
		{[]string{"-o", "./a.arrow", "preds", "a.arrow"}, "-o ./a.arrow: is the input a.arrow, which the output would replace"},
		{[]string{"-o", "sym.arrow", "a.arrow"}, "-o sym.arrow: is the input a.arrow, which the output would replace"},
		{[]string{"-o", "a.arrow", "sym.arrow"}, "-o a.arrow: is the input sym.arrow, which the output would replace"},
		{[]string{"-o", "hard.arrow", "a.arrow"}, "-o hard.arrow: is the input a.arrow, which the output would replace"},
		{[]string{"-o", "preds/part-00000.arrow", "preds"}, "-o preds/part-00000.arrow: is the input preds/part-00000.arrow, which the output would replace"},
		{[]string{"-o", "preds", "preds"}, "-o preds: is the input preds, which the output would replace"},
	} {
		_, err := runCmd(t, dir, c.args...)
		var ue *usageError
		if !errors.As(err, &ue) || err.Error() != c.want+" (go-exporter -h for help)" {
			t.Errorf("%q: got %v, want the usage error %q", c.args, err, c.want)
		}
	}
	for _, name := range []string{"a.arrow", "preds/part-00000.arrow"} {
		if got, _ := os.ReadFile(filepath.Join(dir, name)); !bytes.Equal(got, data) {
			t.Errorf("%s was changed", name)
		}
	}
	// an output beside the inputs, existing or not, is written
	for _, out := range []string{"other.ndjson", "new.ndjson", "preds/new.arrow"} {
		if _, err := runCmd(t, dir, "-o", out, "a.arrow", "preds"); err != nil {
			t.Errorf("-o %s: %v", out, err)
		}
	}
}
