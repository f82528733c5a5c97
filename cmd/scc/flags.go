package main

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// envName is the environment twin of a flag: --ping-interval is
// SCC_PING_INTERVAL.
func envName(flagName string) string {
	return "SCC_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// flags wraps a FlagSet so every flag reads its default from its
// environment twin; a bad environment value is an error.
type flags struct {
	fs   *flag.FlagSet
	errs []error
}

func newFlags(name string) *flags {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	return &flags{fs: fs}
}

func (f *flags) env(name string) (string, bool) {
	return os.LookupEnv(envName(name))
}

func (f *flags) usage(name, help string) string {
	return help + " (env " + envName(name) + ")"
}

func (f *flags) String(name, def, help string) *string {
	if v, ok := f.env(name); ok {
		def = v
	}
	return f.fs.String(name, def, f.usage(name, help))
}

func (f *flags) Int(name string, def int, help string) *int {
	if v, ok := f.env(name); ok {
		n, err := strconv.Atoi(v)
		if err != nil {
			f.errs = append(f.errs, fmt.Errorf("%s=%q: %v", envName(name), v, err))
		} else {
			def = n
		}
	}
	return f.fs.Int(name, def, f.usage(name, help))
}

func (f *flags) Float(name string, def float64, help string) *float64 {
	if v, ok := f.env(name); ok {
		n, err := strconv.ParseFloat(v, 64)
		if err != nil {
			f.errs = append(f.errs, fmt.Errorf("%s=%q: %v", envName(name), v, err))
		} else {
			def = n
		}
	}
	return f.fs.Float64(name, def, f.usage(name, help))
}

func (f *flags) Bool(name string, def bool, help string) *bool {
	if v, ok := f.env(name); ok {
		b, err := strconv.ParseBool(v)
		if err != nil {
			f.errs = append(f.errs, fmt.Errorf("%s=%q: %v", envName(name), v, err))
		} else {
			def = b
		}
	}
	return f.fs.Bool(name, def, f.usage(name, help))
}

// Duration accepts Go durations ("8s") and, like SocketCluster's options,
// plain numbers of milliseconds ("8000").
func (f *flags) Duration(name string, def time.Duration, help string) *time.Duration {
	if v, ok := f.env(name); ok {
		d, err := parseDuration(v)
		if err != nil {
			f.errs = append(f.errs, fmt.Errorf("%s=%q: %v", envName(name), v, err))
		} else {
			def = d
		}
	}
	d := new(time.Duration)
	*d = def
	f.fs.Func(name, f.usage(name, help+fmt.Sprintf(" (default %v)", def)), func(s string) error {
		v, err := parseDuration(s)
		if err != nil {
			return err
		}
		*d = v
		return nil
	})
	return d
}

func parseDuration(s string) (time.Duration, error) {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return time.Duration(n) * time.Millisecond, nil
	}
	return time.ParseDuration(s)
}

func (f *flags) Parse(args []string) error {
	if len(f.errs) > 0 {
		return f.errs[0]
	}
	return f.fs.Parse(args)
}
