//go:build !unix

package audit

import "errors"

func deviceOf(string) (uint64, error) {
	return 0, errors.New("device ids are not available on this platform")
}
