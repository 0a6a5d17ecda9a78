package domain

import (
	"fmt"
	"maps"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// mergeConfig returns base with over merged in: nested maps merge, any
// other value of over replaces base's. A dotted key ("log.level") is the
// nested key it names, as in tiup's server_configs. Neither input changes.
func mergeConfig(base, over map[string]any) map[string]any {
	out := maps.Clone(base)
	if out == nil {
		out = map[string]any{}
	}
	for _, k := range slices.Sorted(maps.Keys(over)) {
		v := over[k]
		parts := strings.Split(k, ".")
		if len(parts) > 1 {
			nested := map[string]any{}
			cur := nested
			for _, p := range parts[:len(parts)-1] {
				next := map[string]any{}
				cur[p] = next
				cur = next
			}
			cur[parts[len(parts)-1]] = v
			out = mergeConfig(out, nested)
			continue
		}
		if vm, ok := v.(map[string]any); ok {
			bm, _ := out[k].(map[string]any)
			out[k] = mergeConfig(bm, vm)
			continue
		}
		out[k] = v
	}
	return out
}

// EncodeTOML writes a config map as TOML: the scalars of a table first,
// then its sub-tables, keys sorted. Values are strings, bools, numbers
// (whole numbers as integers: YAML ints come back from JSON as float64),
// lists of those, and maps; anything else is an error naming the key.
func EncodeTOML(m map[string]any) (string, error) {
	var b strings.Builder
	if err := encodeTable(&b, nil, m); err != nil {
		return "", err
	}
	return b.String(), nil
}

func encodeTable(b *strings.Builder, prefix []string, m map[string]any) error {
	keys := slices.Sorted(maps.Keys(m))
	var tables, tableArrays []string
	for _, k := range keys {
		switch v := m[k].(type) {
		case map[string]any:
			tables = append(tables, k)
			continue
		case []any:
			if len(v) > 0 && isMapList(v) {
				tableArrays = append(tableArrays, k)
				continue
			}
		}
		s, err := tomlValue(m[k])
		if err != nil {
			return fmt.Errorf("config key %s: %w", strings.Join(append(prefix, k), "."), err)
		}
		fmt.Fprintf(b, "%s = %s\n", tomlKey(k), s)
	}
	for _, k := range tables {
		p := append(slices.Clone(prefix), k)
		fmt.Fprintf(b, "\n[%s]\n", tomlPath(p))
		if err := encodeTable(b, p, m[k].(map[string]any)); err != nil {
			return err
		}
	}
	for _, k := range tableArrays {
		p := append(slices.Clone(prefix), k)
		for _, item := range m[k].([]any) {
			fmt.Fprintf(b, "\n[[%s]]\n", tomlPath(p))
			if err := encodeTable(b, p, item.(map[string]any)); err != nil {
				return err
			}
		}
	}
	return nil
}

func isMapList(v []any) bool {
	for _, x := range v {
		if _, ok := x.(map[string]any); !ok {
			return false
		}
	}
	return true
}

func tomlValue(v any) (string, error) {
	switch v := v.(type) {
	case string:
		return tomlString(v), nil
	case bool:
		return strconv.FormatBool(v), nil
	case int:
		return strconv.Itoa(v), nil
	case int64:
		return strconv.FormatInt(v, 10), nil
	case uint64:
		return strconv.FormatUint(v, 10), nil
	case float64:
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return "", fmt.Errorf("%v is not a TOML number", v)
		}
		if v == math.Trunc(v) && math.Abs(v) < 1<<53 {
			return strconv.FormatInt(int64(v), 10), nil
		}
		return strconv.FormatFloat(v, 'g', -1, 64), nil
	case []any:
		parts := make([]string, len(v))
		for i, x := range v {
			s, err := tomlValue(x)
			if err != nil {
				return "", err
			}
			parts[i] = s
		}
		return "[" + strings.Join(parts, ", ") + "]", nil
	case nil:
		return "", fmt.Errorf("null has no TOML form; remove the key or give it a value")
	}
	return "", fmt.Errorf("a %T has no TOML form", v)
}

var bareKeyRE = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

func tomlKey(k string) string {
	if bareKeyRE.MatchString(k) {
		return k
	}
	return tomlString(k)
}

func tomlPath(p []string) string {
	parts := make([]string, len(p))
	for i, k := range p {
		parts[i] = tomlKey(k)
	}
	return strings.Join(parts, ".")
}

// tomlString writes a TOML basic string: quotes, backslashes and control
// characters escaped.
func tomlString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"':
			b.WriteString(`\"`)
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\u%04X`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}
