package dmsim

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// flagKind says how a kingpin-style long flag takes its value.
type flagKind uint8

const (
	valueFlag flagKind = iota + 1 // --name=value or --name value, at most once
	listFlag                      // like valueFlag, and may be repeated
	boolFlag                      // --name, --no-name, --name=true|false
)

// helpError asks Main to print usage and exit 0 (-h, --help).
type helpError struct{ usage string }

func (e helpError) Error() string { return "help requested" }

// isHelp reports whether err asks for usage, and returns it.
func isHelp(err error) (string, bool) {
	var h helpError
	if errors.As(err, &h) {
		return h.usage, true
	}
	return "", false
}

// longFlags is the result of parseLongFlags: flag name → values in order.
type longFlags map[string][]string

func (f longFlags) str(name, def string) string {
	if v, ok := f[name]; ok {
		return v[len(v)-1]
	}
	return def
}

func (f longFlags) on(name string) bool {
	v, ok := f[name]
	return ok && v[len(v)-1] == "true"
}

// parseLongFlags parses a command line the way kingpin does for prometheus
// and alertmanager: only long flags with two dashes ("-config.file" is the
// unknown short flag "-c"), "--name=value" or "--name value", booleans as
// "--name" or "--no-name", no positional arguments. Unknown flags and a
// non-list flag given twice are errors, as in the real programs. -h and
// --help return a helpError; --version is the boolean "version".
func parseLongFlags(program string, args []string, spec map[string]flagKind) (longFlags, error) {
	vals := longFlags{}
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "-h" || a == "--help":
			return nil, helpError{usage: longUsage(program, spec)}
		case a == "--":
			if i+1 < len(args) {
				return nil, fmt.Errorf("unexpected %s, try --help", args[i+1])
			}
			return vals, nil
		case strings.HasPrefix(a, "--"):
		case strings.HasPrefix(a, "-") && len(a) > 1:
			return nil, fmt.Errorf("unknown short flag '%s', try --help (long flags take two dashes: -%s)", a[:2], strings.SplitN(a, "=", 2)[0])
		default:
			return nil, fmt.Errorf("unexpected %s, try --help", a)
		}
		name, val, hasVal := strings.Cut(a[2:], "=")
		kind, known := spec[name]
		if name == "version" {
			kind, known = boolFlag, true
		}
		if !known {
			if base, ok := strings.CutPrefix(name, "no-"); ok && spec[base] == boolFlag && !hasVal {
				vals[base] = []string{"false"}
				continue
			}
			return nil, fmt.Errorf("unknown long flag '--%s', try --help", name)
		}
		switch kind {
		case boolFlag:
			b := true
			if hasVal {
				var err error
				if b, err = strconv.ParseBool(val); err != nil {
					return nil, fmt.Errorf("flag '--%s': want true or false, got %q", name, val)
				}
			}
			vals[name] = []string{strconv.FormatBool(b)}
			continue
		case valueFlag:
			if _, seen := vals[name]; seen {
				return nil, fmt.Errorf("flag '--%s' cannot be repeated", name)
			}
		}
		if !hasVal {
			if i+1 >= len(args) {
				return nil, fmt.Errorf("expected argument for flag '--%s'", name)
			}
			i++
			val = args[i]
		}
		vals[name] = append(vals[name], val)
	}
	return vals, nil
}

func longUsage(program string, spec map[string]flagKind) string {
	names := make([]string, 0, len(spec))
	for n := range spec {
		names = append(names, n)
	}
	slices.Sort(names)
	var b strings.Builder
	fmt.Fprintf(&b, "usage: %s [<flags>]\n\nThe DM simulator's stand-in for %s: it takes the real program's flags and answers its health routes.\n\nFlags:\n  -h, --help\n      --version\n", program, program)
	for _, n := range names {
		switch spec[n] {
		case boolFlag:
			fmt.Fprintf(&b, "      --[no-]%s\n", n)
		case listFlag:
			fmt.Fprintf(&b, "      --%s=VALUE ... (repeatable)\n", n)
		default:
			fmt.Fprintf(&b, "      --%s=VALUE\n", n)
		}
	}
	return b.String()
}

// checkPromDuration validates a Prometheus duration (model.Duration) such
// as "15d" or "1h30m": numbers with the units y, w, d, h, m, s, ms, each at
// most once and in that order.
func checkPromDuration(s string) error {
	if s == "" || s == "0" {
		return nil
	}
	units := []string{"y", "w", "d", "h", "m", "s", "ms"}
	rest, next := s, 0
	for rest != "" {
		j := 0
		for j < len(rest) && rest[j] >= '0' && rest[j] <= '9' {
			j++
		}
		if j == 0 {
			return fmt.Errorf("%q is not a duration like 15d or 1h30m", s)
		}
		k := j
		for k < len(rest) && (rest[k] < '0' || rest[k] > '9') {
			k++
		}
		u := rest[j:k]
		idx := slices.Index(units[next:], u)
		if idx < 0 {
			return fmt.Errorf("%q is not a duration like 15d or 1h30m (units y, w, d, h, m, s, ms, in that order)", s)
		}
		next += idx + 1
		rest = rest[k:]
	}
	return nil
}
