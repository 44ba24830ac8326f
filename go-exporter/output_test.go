package main

import (
	"math"
	"os"
	"path/filepath"
	"testing"
)

func TestOutputFileAtomic(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "good.arrow"), std(pipelineRows(0, 3)).encode(t))
	writeFile(t, filepath.Join(dir, "bad.arrow"), std(pipelineRows(0, 2), rowsWith(3, 1, row{"score": math.NaN()})).encode(t))
	out := filepath.Join(dir, "out", "result.ndjson")
	os.MkdirAll(filepath.Dir(out), 0o755)

	stdout, err := runCmd(t, dir, "-o", out, "good.arrow")
	if err != nil || stdout != "" {
		t.Fatalf("%v %q", err, stdout)
	}
	want, _ := runCmd(t, dir, "good.arrow")
	got, _ := os.ReadFile(out)
	if string(got) != want || want == "" {
		t.Errorf("file has %q, want %q", got, want)
	}

	// a failing export leaves FILE as it was and no temporary file
	if _, err := runCmd(t, dir, "-o", out, "good.arrow", "bad.arrow"); err == nil {
		t.Fatal("no error")
	}
	got2, _ := os.ReadFile(out)
	if string(got2) != want {
		t.Errorf("file changed to %q", got2)
	}
	fail := filepath.Join(dir, "out", "new.ndjson")
	if _, err := runCmd(t, dir, "-o", fail, "bad.arrow"); err == nil {
		t.Fatal("no error")
	}
	if _, err := os.Stat(fail); !os.IsNotExist(err) {
		t.Errorf("%s exists after a failed export", fail)
	}
	entries, _ := os.ReadDir(filepath.Join(dir, "out"))
	if len(entries) != 1 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("out/ holds %q, want only result.ndjson", names)
	}
	// an output folder that does not exist
	if _, err := runCmd(t, dir, "-o", filepath.Join(dir, "nope", "x.ndjson"), "good.arrow"); err == nil {
		t.Error("no error for a missing output folder")
	}
}
