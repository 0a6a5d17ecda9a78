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
	s := jsonscan.New(p)
	if !s.Object() {
		return nil, false
	}
	for n := 0; ; n++ {
		name, ok := s.Member(n)
		if !ok {
			break
		}
		switch string(name) {
		case "operation":
			v.Operation = s.Text()
		case "step":
			v.Step = s.Text()
		case "attempt":
			v.Attempt = int(s.Int())
		case "host":
			v.Host = s.Text()
		case "agent":
			v.Agent = s.Text()
		default:
			return nil, false
		}
	}
	return v, s.End()
}

func decodeStepSucceeded(p []byte) (Event, bool) {
	var v StepSucceeded
	s := jsonscan.New(p)
	if !s.Object() {
		return nil, false
	}
	for n := 0; ; n++ {
		name, ok := s.Member(n)
		if !ok {
			break
		}
		switch string(name) {
		case "operation":
			v.Operation = s.Text()
		case "step":
			v.Step = s.Text()
		case "attempt":
			v.Attempt = int(s.Int())
		case "host":
			v.Host = s.Text()
		case "agent":
			v.Agent = s.Text()
		case "duration_ms":
			v.DurationMS = s.Int()
		case "stdout":
			v.Stdout = s.Text()
		case "stderr":
			v.Stderr = s.Text()
		default:
			return nil, false
		}
	}
	return v, s.End()
}

func decodeStepFailed(p []byte) (Event, bool) {
	var v StepFailed
	s := jsonscan.New(p)
	if !s.Object() {
		return nil, false
	}
	for n := 0; ; n++ {
		name, ok := s.Member(n)
		if !ok {
			break
		}
		switch string(name) {
		case "operation":
			v.Operation = s.Text()
		case "step":
			v.Step = s.Text()
		case "attempt":
			v.Attempt = int(s.Int())
		case "host":
			v.Host = s.Text()
		case "agent":
			v.Agent = s.Text()
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
			return nil, false
		}
	}
	return v, s.End()
}

func decodeOperationSucceeded(p []byte) (Event, bool) {
	var v OperationSucceeded
	s := jsonscan.New(p)
	if !s.Object() {
		return nil, false
	}
	for n := 0; ; n++ {
		name, ok := s.Member(n)
		if !ok {
			break
		}
		switch string(name) {
		case "id":
			v.ID = s.Text()
		case "attempt":
			v.Attempt = int(s.Int())
		default:
			return nil, false
		}
	}
	return v, s.End()
}
