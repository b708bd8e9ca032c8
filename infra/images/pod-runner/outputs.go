package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
)

const (
	outputsFile     = "outputs.json"
	maxOutputsBytes = 1024 * 1024
)

// readOutputs reads <state>/outputs.json, with the same
// warnings. The file is opened without following links (a link to another file must not leak it) and
// bounded in size; a missing file means no outputs. Its bytes go to the agent as they are: the server parses
// them with the Docker adapter's own code (parseOutputs), so both give the same outputs and warnings.
func readOutputs(stateDir string) (raw []byte, warnings []string) {
	fd, err := syscall.Open(filepath.Join(stateDir, outputsFile), syscall.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		switch {
		case errors.Is(err, syscall.ENOENT):
			return nil, nil
		case errors.Is(err, syscall.ELOOP):
			return nil, []string{outputsFile + " is a symbolic link; outputs ignored"}
		}
		return nil, []string{fmt.Sprintf("%s could not be read (%s); outputs ignored", outputsFile, errnoCode(err))}
	}
	f := os.NewFile(uintptr(fd), outputsFile)
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, []string{fmt.Sprintf("%s could not be read (%s); outputs ignored", outputsFile, errnoCode(err))}
	}
	if !info.Mode().IsRegular() {
		return nil, []string{outputsFile + " is not a regular file; outputs ignored"}
	}
	if info.Size() > maxOutputsBytes {
		return nil, []string{fmt.Sprintf("%s is %d bytes, over the %d-byte limit; outputs ignored", outputsFile, info.Size(), maxOutputsBytes)}
	}
	data, err := io.ReadAll(io.LimitReader(f, 2*maxOutputsBytes+1))
	if err != nil {
		return nil, []string{fmt.Sprintf("%s could not be read (%s); outputs ignored", outputsFile, errnoCode(err))}
	}
	if len(data) > 2*maxOutputsBytes { // it grew after being measured: still bounded
		return nil, []string{fmt.Sprintf("%s is %d bytes, over the %d-byte limit; outputs ignored", outputsFile, len(data), maxOutputsBytes)}
	}
	if data == nil {
		data = []byte{} // an empty file is sent (and is invalid JSON there), not taken for no file
	}
	return data, nil
}

// errnoCode names an error like Node's err.code (EACCES, ...).
func errnoCode(err error) string {
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return "Error: " + err.Error()
	}
	names := map[syscall.Errno]string{
		syscall.EACCES: "EACCES", syscall.EPERM: "EPERM", syscall.ENXIO: "ENXIO", syscall.EIO: "EIO",
		syscall.ENOTDIR: "ENOTDIR", syscall.EISDIR: "EISDIR", syscall.ENAMETOOLONG: "ENAMETOOLONG",
		syscall.EMFILE: "EMFILE", syscall.ENFILE: "ENFILE", syscall.ENOMEM: "ENOMEM", syscall.EOVERFLOW: "EOVERFLOW",
		syscall.ETXTBSY: "ETXTBSY", syscall.EROFS: "EROFS", syscall.EINVAL: "EINVAL", syscall.EAGAIN: "EAGAIN",
		syscall.EINTR: "EINTR", syscall.ENODEV: "ENODEV", syscall.EBUSY: "EBUSY", syscall.ESTALE: "ESTALE",
		syscall.EOPNOTSUPP: "ENOTSUP", syscall.EFBIG: "EFBIG", syscall.ENOSPC: "ENOSPC", syscall.EDQUOT: "EDQUOT",
	}
	if name, ok := names[errno]; ok {
		return name
	}
	return fmt.Sprintf("Error: %s", errno.Error())
}
