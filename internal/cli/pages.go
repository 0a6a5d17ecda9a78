package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"github.com/spf13/cobra"
)

// maxPage is the largest page the API answers.
const maxPage = 1000

// listPage is one page of a list: {"items": [...], "next_cursor": "..."}.
type listPage[T any] struct {
	Items      []T    `json:"items"`
	NextCursor string `json:"next_cursor,omitempty"`
}

// listAll follows a list's cursor until it has limit items or the list
// ends; more reports whether the list holds more than limit (one item
// past the limit is asked for to know it). It answers each item decoded
// and as the API sent it (what -o json and -o yaml print).
func listAll[T any](ctx context.Context, c *Client, path string, q url.Values, limit int) (items []T, raw []json.RawMessage, more bool, err error) {
	raw, more, err = listRaw(ctx, c, path, q, limit)
	if err != nil {
		return nil, nil, false, err
	}
	items = make([]T, len(raw))
	for i, r := range raw {
		if err := json.Unmarshal(r, &items[i]); err != nil {
			return nil, nil, false, fmt.Errorf("GET %s: an item is not what this dmgr expects (%w); is the server the same version?", path, err)
		}
	}
	return items, raw, more, nil
}

func listRaw(ctx context.Context, c *Client, path string, q url.Values, limit int) (items []json.RawMessage, more bool, err error) {
	if limit < 1 {
		return nil, false, usageError("--limit %d: want 1 or more", limit)
	}
	cursor := ""
	for {
		qq := url.Values{}
		for k, v := range q {
			qq[k] = v
		}
		qq.Set("limit", strconv.Itoa(min(limit+1-len(items), maxPage)))
		if cursor != "" {
			qq.Set("cursor", cursor)
		}
		var p listPage[json.RawMessage]
		if _, err := c.Do(ctx, Request{Method: http.MethodGet, Path: path, Query: qq}, &p); err != nil {
			return nil, false, err
		}
		items = append(items, p.Items...)
		if len(items) > limit {
			return items[:limit], true, nil
		}
		if p.NextCursor == "" || len(p.Items) == 0 {
			return items, false, nil
		}
		cursor = p.NextCursor
	}
}

// rawList is a list as -o json and -o yaml print it: the items as the
// API sent them.
func rawList(raw []json.RawMessage) listPage[json.RawMessage] {
	if raw == nil {
		raw = []json.RawMessage{}
	}
	return listPage[json.RawMessage]{Items: raw}
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

// addLimitFlag adds --limit to a list command.
func addLimitFlag(cmd *cobra.Command, limit *int) {
	cmd.Flags().IntVar(limit, "limit", 100, "show at most this many (the list is read page by page up to it)")
}

// sayMore tells on stderr that a list holds more than was shown.
func (a *App) sayMore(more bool, what string, limit int) {
	if more {
		fmt.Fprintf(a.Stderr, "more %s exist than the %d shown: raise --limit to see them\n", what, limit)
	}
}
