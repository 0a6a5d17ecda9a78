package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// Every list command pages as the API does: one page of --limit items
// (the API's default, 100, when not given; at most maxPage), and when more
// exist the last line is the command that prints the next page (--cursor).
// --all follows every page. -o json|yaml print the API's answer as sent,
// or with --all one document with the items of every page.

// maxPage is the largest page the API answers.
const maxPage = 1000

// pageFlags are the paging flags of a list command.
type pageFlags struct {
	limit  int
	cursor string
	all    bool
	flags  *pflag.FlagSet // where add put them: an explicit --limit 0 is refused
}

// add adds --limit, --cursor and --all; noun names the items ("clusters").
func (p *pageFlags) add(fl *pflag.FlagSet, noun string) {
	p.flags = fl
	fl.IntVar(&p.limit, "limit", 0, fmt.Sprintf("%s per page, 1 to %d (default 100)", noun, maxPage))
	fl.StringVar(&p.cursor, "cursor", "", "continue after the page that printed this cursor")
	fl.BoolVar(&p.all, "all", false, "follow every page, not only the first")
}

// query adds the paging parameters to q (a new query when q is nil). A
// limit out of range is a usage error (exit status 2).
func (p pageFlags) query(q url.Values) (url.Values, error) {
	if q == nil {
		q = url.Values{}
	}
	if p.limit != 0 || (p.flags != nil && p.flags.Changed("limit")) {
		if p.limit < 1 || p.limit > maxPage {
			return nil, usageError("--limit %d: use a number from 1 to %d", p.limit, maxPage)
		}
		q.Set("limit", strconv.Itoa(p.limit))
	}
	if c := strings.TrimSpace(p.cursor); c != "" {
		q.Set("cursor", c)
	}
	return q, nil
}

// queryOf is a list's filters: name, value, name, value, …; a value that
// is empty (or only spaces) is no filter.
func queryOf(nameValues ...string) url.Values {
	q := url.Values{}
	for i := 0; i+1 < len(nameValues); i += 2 {
		if v := strings.TrimSpace(nameValues[i+1]); v != "" {
			q.Set(nameValues[i], v)
		}
	}
	return q
}

// pagingHelp is the paragraph of a list command's help that says how it
// pages; noun names the items, key is the list's field in the API's
// answer.
func pagingHelp(noun, key string) string {
	return fmt.Sprintf(`One page is printed (--limit %s, 100 by default, at most %d); when more
exist, the last line is the command that prints the next page (--cursor).
--all follows every page. With -o json or -o yaml the answer is the API's
{%s, next_cursor}; with --all, {%s} of every page.`, noun, maxPage, key, key)
}

// listSpec says what a list command lists.
type listSpec struct {
	path    string // the list route: GET path answers {items, next_cursor}
	noun    string // what it lists: "clusters"
	short   string // the help's first line
	long    string // the help, before how the list pages (default: short)
	example string
}

// listCommand makes the list command of s. filters answers the query of
// the filter flags the caller adds (nil: none), or a usage error; table
// prints a page's items.
func (a *App) listCommand(s listSpec, filters func() (url.Values, error), table func(io.Writer, []json.RawMessage) error) *cobra.Command {
	var pages pageFlags
	cmd := &cobra.Command{
		Use:     "list",
		Short:   s.short,
		Long:    firstNonEmpty(s.long, s.short+".") + "\n\n" + pagingHelp(s.noun, "items"),
		Example: s.example,
		Args:    args(0, 0, "[flags]"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			var q url.Values
			if filters != nil {
				var err error
				if q, err = filters(); err != nil {
					return err
				}
			}
			return a.printList(cmd, s.path, q, pages, table)
		},
	}
	pages.add(cmd.Flags(), s.noun)
	return cmd
}

// printList prints a list route's page, or every page with --all, whose
// items the API answers under "items": -o json|yaml the API's answer,
// else table of the items and the next page's command.
func (a *App) printList(cmd *cobra.Command, path string, q url.Values, p pageFlags, table func(io.Writer, []json.RawMessage) error) error {
	q, err := p.query(q)
	if err != nil {
		return err
	}
	return a.printPages(cmd, path, "items", q, p.all, table)
}

// printPages is printList for a route whose items are under key, with
// the paging parameters in q already.
func (a *App) printPages(cmd *cobra.Command, path, key string, q url.Values, all bool, table func(io.Writer, []json.RawMessage) error) error {
	c, err := a.client()
	if err != nil {
		return err
	}
	raw, items, next, err := fetchPages(cmd.Context(), c, path, key, q, all)
	if err != nil {
		return err
	}
	return a.print(raw, func(w io.Writer) error {
		if err := table(w, items); err != nil {
			return err
		}
		return nextHint(w, cmd, next)
	})
}

// fetchPages gets one page of a list route (or, with all, every page) and
// answers what to print for -o json|yaml (the API's answer as is, or, for
// every page, {key: [all items]}), the items and the next page's cursor.
func fetchPages(ctx context.Context, c *Client, path, key string, q url.Values, all bool) (json.RawMessage, []json.RawMessage, string, error) {
	var items []json.RawMessage
	seen := map[string]bool{}
	for {
		var raw json.RawMessage
		if _, err := c.Do(ctx, Request{Method: http.MethodGet, Path: path, Query: q}, &raw); err != nil {
			return nil, nil, "", err
		}
		var page map[string]json.RawMessage
		if err := json.Unmarshal(raw, &page); err != nil {
			return nil, nil, "", fmt.Errorf("GET %s: the answer is not what this dmgr expects (%w); is the server the same version?", path, err)
		}
		var got []json.RawMessage
		if err := json.Unmarshal(page[key], &got); err != nil || page[key] == nil {
			return nil, nil, "", fmt.Errorf("GET %s: the answer has no %s list; is the server the same version?", path, key)
		}
		var next string
		if n, ok := page["next_cursor"]; ok {
			if err := json.Unmarshal(n, &next); err != nil {
				return nil, nil, "", fmt.Errorf("GET %s: next_cursor is not a string: %w", path, err)
			}
		}
		if !all {
			return raw, got, next, nil
		}
		items = append(items, got...)
		if next == "" {
			break
		}
		if seen[next] {
			return nil, nil, "", fmt.Errorf("GET %s: the server answered cursor %s twice; stopping", path, next)
		}
		seen[next] = true
		q = cloneValues(q)
		q.Set("cursor", next)
	}
	if items == nil {
		items = []json.RawMessage{}
	}
	raw, err := json.Marshal(map[string]any{key: items})
	if err != nil {
		return nil, nil, "", err
	}
	return raw, items, "", nil
}

func cloneValues(v url.Values) url.Values {
	c := url.Values{}
	for k, vs := range v {
		c[k] = append([]string(nil), vs...)
	}
	return c
}

// nextHint prints, when next is set, the command line that prints the
// next page: this command with the flags given (never --server or
// --token, which are not its own) and --cursor next.
func nextHint(w io.Writer, cmd *cobra.Command, next string) error {
	if next == "" {
		return nil
	}
	_, err := fmt.Fprintf(w, "More: %s (or --all for every page)\n", nextCommand(cmd, next))
	return err
}

// nextCommand is the command line of cmd's next page.
func nextCommand(cmd *cobra.Command, next string) string {
	parts := []string{cmd.CommandPath()}
	for _, a := range cmd.Flags().Args() {
		parts = append(parts, shellQuote(a))
	}
	cmd.LocalNonPersistentFlags().VisitAll(func(f *pflag.Flag) {
		if !f.Changed || f.Name == "cursor" || f.Name == "all" {
			return
		}
		if sv, ok := f.Value.(pflag.SliceValue); ok {
			for _, v := range sv.GetSlice() {
				parts = append(parts, "--"+f.Name, shellQuote(v))
			}
			return
		}
		if f.Value.Type() == "bool" {
			parts = append(parts, "--"+f.Name+"="+f.Value.String())
			return
		}
		parts = append(parts, "--"+f.Name, shellQuote(f.Value.String()))
	})
	return strings.Join(append(parts, "--cursor", shellQuote(next)), " ")
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.,:/=@+") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// itemsTable is the table of a list's items: header, and a row per item.
func itemsTable[T any](header []string, row func(T) []string) func(io.Writer, []json.RawMessage) error {
	return func(w io.Writer, items []json.RawMessage) error {
		vs, err := decodeItems[T](items)
		if err != nil {
			return err
		}
		t := NewTable(header...)
		for _, v := range vs {
			t.Row(row(v)...)
		}
		return t.Write(w)
	}
}

// decodeDoc decodes one API answer (or list item).
func decodeDoc[T any](raw json.RawMessage) (T, error) {
	var v T
	if err := json.Unmarshal(raw, &v); err != nil {
		return v, fmt.Errorf("the answer is not what this dmgr expects (%w); is the server the same version?", err)
	}
	return v, nil
}

// decodeItems decodes the items of a list.
func decodeItems[T any](items []json.RawMessage) ([]T, error) {
	out := make([]T, 0, len(items))
	for _, raw := range items {
		v, err := decodeDoc[T](raw)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// getDoc reads one document: decoded into out, and as the API sent it.
func getDoc(ctx context.Context, c *Client, req Request, out any) (json.RawMessage, error) {
	var raw json.RawMessage
	if _, err := c.Do(ctx, req, &raw); err != nil {
		return nil, err
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return nil, fmt.Errorf("%s %s: the answer is not what this dmgr expects (%w); is the server the same version?", req.Method, req.Path, err)
	}
	return raw, nil
}

// read is getDoc with the command's login.
func (a *App) read(ctx context.Context, req Request, out any) (json.RawMessage, error) {
	c, err := a.client()
	if err != nil {
		return nil, err
	}
	return getDoc(ctx, c, req, out)
}
