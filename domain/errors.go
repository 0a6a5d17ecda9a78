package domain

import (
	"errors"
	"fmt"
)

// Error codes. Each maps to one HTTP status in httpapi; only Internal is
// logged as an error.
const (
	Invalid      = "invalid"      // the input is wrong; retrying it unchanged fails again
	NotFound     = "not_found"    // the named thing does not exist
	Conflict     = "conflict"     // the input is fine but clashes with current state
	Unauthorized = "unauthorized" // no or a wrong credential
	Forbidden    = "forbidden"    // the credential may not do this
	TooLarge     = "too_large"    // the request body is over the configured limit
	Unavailable  = "unavailable"  // a dependency is down; retry later
	Unreachable  = "unreachable"  // a host the command must reach does not answer
	Internal     = "internal"     // a bug or an unexpected failure
)

// Error is dmgr's one error type: a code for programs and a message for
// people. The message says what was wrong and, where it helps, what to do.
type Error struct {
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Message }

// Errorf returns an *Error with the given code and a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the code of the first *Error in err's chain, or Internal
// when there is none (nil gives "").
func ErrorCode(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return Internal
}

// ErrorMessage returns the message of the first *Error in err's chain, or a
// generic text for internal errors so that their details are not shown to
// clients.
func ErrorMessage(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	return "internal error"
}
