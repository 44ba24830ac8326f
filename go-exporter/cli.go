package main

// The command line: flags, the manual (-h), usage errors and the config they
// make.

import (
	"context"
	_ "embed"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"

	"github.com/apache/arrow-go/v18/arrow/memory"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0"

//go:embed main.go
var mainSource string

// manual returns the package doc comment of main.go as plain text.
func manual() string {
	var sb strings.Builder
	for _, line := range strings.Split(mainSource, "\n") {
		if strings.HasPrefix(line, "package ") {
			break
		}
		if strings.HasPrefix(line, "//go:") || !strings.HasPrefix(line, "//") {
			continue
		}
		line = strings.TrimPrefix(line, "//")
		line = strings.TrimPrefix(line, " ")
		sb.WriteString(line)
		sb.WriteByte('\n')
	}
	return sb.String()
}

// usageError is a bad command line (exit status 2).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg + " (go-exporter -h for help)" }

// maxWorkers bounds -workers: each worker may hold two parts of about 1 MiB
// of JSON in flight (main.go), so this many take at most about 2 GiB.
const maxWorkers = 1024

// config is what the command line asks for.
type config struct {
	fields    []int
	json      bool // one JSON array rather than NDJSON
	output    string
	inputs    []string
	workers   int
	maxBuffer int64            // largest single allocation; 0: derived from the input size
	alloc     memory.Allocator // nil: memory.DefaultAllocator
}

// parseArgs turns the command line args (without the program name) into a
// config, or for -h and -version into the text to print instead.
func parseArgs(args []string) (cfg config, text string, err error) {
	fs := flag.NewFlagSet("go-exporter", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	out := fs.String("o", "", "")
	format := fs.String("format", "ndjson", "")
	fields := fs.String("fields", "text,label,score", "")
	showVersion := fs.Bool("version", false, "")
	workers := fs.Int("workers", runtime.GOMAXPROCS(0), "")
	maxBuffer := fs.Int64("max-buffer", 0, "")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return cfg, manual(), nil
		}
		return cfg, "", &usageError{err.Error()}
	}
	if *showVersion {
		return cfg, fmt.Sprintf("go-exporter %s\n", version), nil
	}
	cfg = config{output: *out, inputs: fs.Args(), workers: *workers, maxBuffer: *maxBuffer}
	switch *format {
	case "ndjson":
	case "json":
		cfg.json = true
	default:
		return cfg, "", &usageError{fmt.Sprintf("-format: unknown format %q, expected ndjson or json", *format)}
	}
	if cfg.fields, err = parseFields(*fields); err != nil {
		return cfg, "", err
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	if given["workers"] && (cfg.workers < 1 || cfg.workers > maxWorkers) {
		return cfg, "", &usageError{fmt.Sprintf("-workers %d: out of range, expected 1 to %d", cfg.workers, maxWorkers)}
	}
	if given["max-buffer"] && cfg.maxBuffer < 1 {
		return cfg, "", &usageError{fmt.Sprintf("-max-buffer %d: out of range, expected a positive number of bytes", cfg.maxBuffer)}
	}
	if len(cfg.inputs) == 0 {
		return cfg, "", &usageError{"no INPUT given"}
	}
	if in := inputOf(cfg.output, cfg.inputs); in != "" {
		return cfg, "", &usageError{fmt.Sprintf("-o %s: is the input %s, which the output would replace", cfg.output, in)}
	}
	return cfg, "", nil
}

// inputOf returns the input (a file, a folder, or a file of a folder input)
// that output is, by name, symbolic link or hard link; "" if none. An output
// that does not exist yet is none; an input that cannot be read is left to
// the export to report.
func inputOf(output string, inputs []string) string {
	if output == "" {
		return ""
	}
	out, err := os.Stat(output)
	if err != nil {
		return ""
	}
	for _, in := range inputs {
		st, err := os.Stat(in)
		if err != nil {
			continue
		}
		if os.SameFile(out, st) {
			return in
		}
		if !st.IsDir() {
			continue
		}
		files, err := expandInputs([]string{in})
		if err != nil {
			continue
		}
		for _, f := range files {
			if st, err := os.Stat(f); err == nil && os.SameFile(out, st) {
				return f
			}
		}
	}
	return ""
}

// run executes the command line args (without the program name): it writes
// the inputs' JSON, the manual or the version to stdout, or to the file of
// -o. Errors are returned, for main to print.
func run(ctx context.Context, stdout io.Writer, args []string) error {
	cfg, text, err := parseArgs(args)
	if err != nil {
		return err
	}
	if text != "" {
		_, err := io.WriteString(stdout, text)
		return err
	}
	return export(ctx, stdout, cfg)
}
