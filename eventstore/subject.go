package eventstore

import (
	"fmt"
	"strings"
)

// Subjects of the event stream.
const (
	StreamName    = "DMGR_EVENTS"
	subjectPrefix = "dmgr.ev."
	// AllSubjects matches every event subject.
	AllSubjects = subjectPrefix + ">"
)

// Subject is the subject that holds the commits of one aggregate.
func Subject(aggregateType, id string) string {
	return subjectPrefix + aggregateType + "." + EscapeToken(id)
}

// TypeSubjects matches the subjects of every aggregate of one type.
func TypeSubjects(aggregateType string) string {
	return subjectPrefix + aggregateType + ".*"
}

// EscapeToken makes s usable as one subject token: characters that NATS
// gives a meaning to ('.', '*', '>', whitespace) and '%' itself are written
// as %XX, so cluster "prod.a" and host "10.0.0.1" stay one token each.
func EscapeToken(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '.' || c == '*' || c == '>' || c == '%' || c <= ' ' || c == 0x7f {
			fmt.Fprintf(&b, "%%%02X", c)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}
