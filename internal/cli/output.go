package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/jedib0t/go-pretty/v6/table"
	"gopkg.in/yaml.v3"
)

// Output formats of --output.
const (
	OutputTable = "table"
	OutputJSON  = "json"
	OutputYAML  = "yaml"
)

// checkOutput refuses an unknown --output.
func checkOutput(o string) error {
	switch o {
	case OutputTable, OutputJSON, OutputYAML:
		return nil
	}
	return usageError("--output %q: use table, json or yaml", o)
}

// print writes v (an API answer: a struct with JSON tags, a map, or a
// json.RawMessage) as JSON or YAML per --output, or calls table for the
// table form (nil: JSON in every form). JSON and YAML keep the API's
// field names, so scripts read what the API documents.
func (a *App) print(v any, table func(w io.Writer) error) error {
	switch {
	case a.output == OutputJSON || (table == nil && a.output != OutputYAML):
		return writeJSON(a.Stdout, v)
	case a.output == OutputYAML:
		return writeYAML(a.Stdout, v)
	default:
		return table(a.Stdout)
	}
}

func writeJSON(w io.Writer, v any) error {
	var b []byte
	var err error
	if raw, ok := v.(json.RawMessage); ok {
		var buf bytes.Buffer
		if err = json.Indent(&buf, raw, "", "  "); err == nil {
			b = buf.Bytes()
		}
	} else {
		b, err = json.MarshalIndent(v, "", "  ")
	}
	if err != nil {
		return fmt.Errorf("print as JSON: %w", err)
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// writeYAML goes through JSON, so field names are the API's.
func writeYAML(w io.Writer, v any) error {
	raw, ok := v.(json.RawMessage)
	if !ok {
		var err error
		if raw, err = json.Marshal(v); err != nil {
			return fmt.Errorf("print as YAML: %w", err)
		}
	}
	var node yaml.Node
	if err := yaml.Unmarshal(raw, &node); err != nil { // JSON is YAML; the node keeps the key order
		return fmt.Errorf("print as YAML: %w", err)
	}
	clearStyle(&node)
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(&node); err != nil {
		return fmt.Errorf("print as YAML: %w", err)
	}
	return enc.Close()
}

// clearStyle drops JSON's flow style and quoting so the YAML reads as
// block YAML.
func clearStyle(n *yaml.Node) {
	if n.Kind == yaml.MappingNode || n.Kind == yaml.SequenceNode {
		n.Style = 0
	}
	if n.Kind == yaml.ScalarNode && n.Style == yaml.DoubleQuotedStyle && !strings.ContainsAny(n.Value, "\n") {
		n.Style = 0
		if n.Tag != "!!str" {
			n.Style = yaml.DoubleQuotedStyle
		}
	}
	for _, c := range n.Content {
		clearStyle(c)
	}
}

// Table is a table in tiup's style: a header, a line of dashes under each
// header, columns two spaces apart, no borders.
type Table struct {
	header []string
	rows   [][]string
}

// NewTable starts a table with these column headers.
func NewTable(header ...string) *Table { return &Table{header: header} }

// Row adds a row; cells beyond the header are dropped, missing ones empty.
func (t *Table) Row(cells ...string) { t.rows = append(t.rows, cells) }

// Len is the number of rows.
func (t *Table) Len() int { return len(t.rows) }

// Write renders the table.
func (t *Table) Write(w io.Writer) error {
	tw := table.NewWriter()
	tw.SetStyle(tiupStyle)
	row := func(cells []string) table.Row {
		r := make(table.Row, len(t.header))
		for i := range r {
			if i < len(cells) {
				r[i] = cells[i]
			} else {
				r[i] = ""
			}
		}
		return r
	}
	tw.AppendRow(row(t.header))
	dashes := make([]string, len(t.header))
	for i, h := range t.header {
		dashes[i] = strings.Repeat("-", len(h))
	}
	tw.AppendRow(row(dashes))
	for _, r := range t.rows {
		tw.AppendRow(row(r))
	}
	var b strings.Builder
	for line := range strings.SplitSeq(tw.Render(), "\n") {
		b.WriteString(strings.TrimRight(line, " "))
		b.WriteByte('\n')
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// tiupStyle: no borders, no separators, two spaces between columns.
var tiupStyle = table.Style{
	Name: "tiup",
	Box: table.BoxStyle{
		PaddingLeft:  "",
		PaddingRight: "  ",
	},
	Options: table.Options{},
	Format:  table.FormatOptions{},
}

// KeyValues prints "Key:  value" lines aligned, as tiup prints a
// cluster's heading.
func KeyValues(w io.Writer, kv ...[2]string) error {
	width := 0
	for _, p := range kv {
		width = max(width, len(p[0])+1)
	}
	for _, p := range kv {
		if _, err := fmt.Fprintf(w, "%-*s  %s\n", width, p[0]+":", p[1]); err != nil {
			return err
		}
	}
	return nil
}
