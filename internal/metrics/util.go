package metrics

import (
	"runtime"
	"strconv"
)

func itoa(i int) string { return strconv.Itoa(i) }
func goVersion() string { return runtime.Version() }
