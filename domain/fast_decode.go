package domain

import "github.com/dmgr/dmgr/internal/jsonscan"

// The step events are most of every cluster's history: each step of each
// operation is started and finished. Their payloads are flat objects of
// strings and integers, which these decoders read without reflection. A
// decoder reports false for anything but the members it knows, with the
// kinds it knows (an unknown or escaped name, a null, a fraction…), and the
// payload is then decoded by the JSON v2 decoder as every other event is;
// what a fast decoder accepts, the v2 decoder reads the same
// (FuzzFastDecodersAgreeWithV2).

func decodeStepStarted(p []byte) (Event, bool) {
	var v StepStarted
	ok := members(p, func(s *jsonscan.Scanner, name []byte) bool {
		return stepMember(s, name, &v.Operation, &v.Step, &v.Attempt, &v.Host, &v.Agent)
	})
	return v, ok
}

func decodeStepSucceeded(p []byte) (Event, bool) {
	var v StepSucceeded
	ok := members(p, func(s *jsonscan.Scanner, name []byte) bool {
		switch string(name) {
		case "duration_ms":
			v.DurationMS = s.Int()
		case "stdout":
			v.Stdout = s.Text()
		case "stderr":
			v.Stderr = s.Text()
		default:
			return stepMember(s, name, &v.Operation, &v.Step, &v.Attempt, &v.Host, &v.Agent)
		}
		return true
	})
	return v, ok
}

func decodeStepFailed(p []byte) (Event, bool) {
	var v StepFailed
	ok := members(p, func(s *jsonscan.Scanner, name []byte) bool {
		switch string(name) {
		case "exit_code":
			v.ExitCode = int(s.Int())
		case "error":
			v.Error = s.Text()
		case "duration_ms":
			v.DurationMS = s.Int()
		case "stdout":
			v.Stdout = s.Text()
		case "stderr":
			v.Stderr = s.Text()
		default:
			return stepMember(s, name, &v.Operation, &v.Step, &v.Attempt, &v.Host, &v.Agent)
		}
		return true
	})
	return v, ok
}

func decodeOperationSucceeded(p []byte) (Event, bool) {
	var v OperationSucceeded
	ok := members(p, func(s *jsonscan.Scanner, name []byte) bool {
		switch string(name) {
		case "id":
			v.ID = s.Text()
		case "attempt":
			v.Attempt = int(s.Int())
		default:
			return false
		}
		return true
	})
	return v, ok
}

// stepMember reads one of the members every step event has into its
// field; false for any other name.
func stepMember(s *jsonscan.Scanner, name []byte, operation, step *string, attempt *int, host, agent *string) bool {
	switch string(name) {
	case "operation":
		*operation = s.Text()
	case "step":
		*step = s.Text()
	case "attempt":
		*attempt = int(s.Int())
	case "host":
		*host = s.Text()
	case "agent":
		*agent = s.Text()
	default:
		return false
	}
	return true
}

// members reads the flat object p, handing each member's name to member,
// which reads its value; false when member refuses a name or p is not
// such an object.
func members(p []byte, member func(s *jsonscan.Scanner, name []byte) bool) bool {
	s := jsonscan.New(p)
	if !s.Object() {
		return false
	}
	for n := 0; ; n++ {
		name, ok := s.Member(n)
		if !ok {
			break
		}
		if !member(&s, name) {
			return false
		}
	}
	return s.End()
}
