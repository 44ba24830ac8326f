package main

// Errors that say where: the file, the batch, the row and the column; and
// protect, which turns the Arrow readers' panics into errors.

import (
	"errors"
	"fmt"
	"os"
)

// pathError turns "open FILE: reason" into "FILE: reason".
func pathError(path string, err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return &fileError{path, -1, pe.Err}
	}
	return &fileError{path, -1, err}
}

// fileError is an error about one input file, and where applicable one
// batch of it.
type fileError struct {
	file  string
	batch int // < 0: not about one batch
	err   error
}

func (e *fileError) Error() string {
	if e.batch < 0 {
		return fmt.Sprintf("%s: %v", e.file, e.err)
	}
	return fmt.Sprintf("%s: batch %d, %v", e.file, e.batch, e.err)
}

func (e *fileError) Unwrap() error { return e.err }

// valueError is a problem with one value (row >= 0) or with a whole column
// of a batch (row < 0). The exporter adds the file and the batch.
type valueError struct {
	row    int
	column string
	msg    string
}

func (e *valueError) Error() string {
	if e.row < 0 {
		return fmt.Sprintf("column %q: %s", e.column, e.msg)
	}
	return fmt.Sprintf("row %d, column %q: %s", e.row, e.column, e.msg)
}

func corrupt(format string, args ...any) error {
	return fmt.Errorf("corrupt Arrow data: "+format, args...)
}

// protectBatch is protect for work on batch of the file at path: an error
// that does not name the file yet (a panic's) is made to.
func protectBatch(path string, batch int, f func() error) error {
	err := protect(f)
	var fe *fileError
	if err != nil && !errors.As(err, &fe) {
		err = &fileError{path, batch, err}
	}
	return err
}

// protect runs f and turns a panic into an error.
func protect(f func() error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			if e, ok := p.(error); ok && errors.Is(e, errAllocLimit) {
				err = e
				return
			}
			if _, ok := p.(interface{ Addr() uintptr }); ok { // a fault, see ipcInput.openFile
				err = errors.New("the file changed while it was read (truncated?)")
				return
			}
			err = fmt.Errorf("invalid Arrow data: %v", p)
		}
	}()
	return f()
}
