package main

// The output: standard output, or a file written atomically.

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// export writes the inputs to cfg.output (atomically) or to stdout.
func export(ctx context.Context, stdout io.Writer, cfg config) error {
	if cfg.output == "" {
		return exportTo(ctx, stdout, cfg)
	}
	dir, base := filepath.Split(cfg.output)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return fmt.Errorf("%s: %w", cfg.output, err)
	}
	done := false
	defer func() {
		if !done {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := exportTo(ctx, tmp, cfg); err != nil {
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		return fmt.Errorf("%s: %w", cfg.output, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("%s: %w", cfg.output, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("%s: %w", cfg.output, err)
	}
	if err := os.Rename(tmp.Name(), cfg.output); err != nil {
		return fmt.Errorf("%s: %w", cfg.output, err)
	}
	done = true
	if d, err := os.Open(dir); err == nil { // make the rename durable
		d.Sync()
		d.Close()
	}
	return nil
}
