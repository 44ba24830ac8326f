package main

import (
	"errors"
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
