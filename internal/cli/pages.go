package cli

import (
	"context"
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
// past the limit is asked for to know it).
func listAll[T any](ctx context.Context, c *Client, path string, q url.Values, limit int) (items []T, more bool, err error) {
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
		var p listPage[T]
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
