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

// config is what the command line asks for.
type config struct {
	fields    []int
	json      bool // one JSON array rather than NDJSON
	output    string
	inputs    []string
	workers   int
	maxBuffer int64            // largest single allocation; <= 0: derived from the input size
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
	workers := fs.Int("workers", 0, "")
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
	if len(cfg.inputs) == 0 {
		return cfg, "", &usageError{"no INPUT given"}
	}
	if cfg.workers <= 0 {
		cfg.workers = runtime.GOMAXPROCS(0)
	}
	return cfg, "", nil
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
