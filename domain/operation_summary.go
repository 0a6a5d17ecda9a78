package domain

// OperationSummary is what a list of operations shows of one: kind,
// cluster, status, attempt and error, folded from the events of the
// commits that carry its id. The service's list and the ClickHouse
// projection both fold it with Apply, so that they answer alike.
type OperationSummary struct {
	Kind    string
	Cluster string
	Status  string
	Attempt int
	Error   string
}

// immediateKinds are the commands that complete in their commit, by the
// type of their first event.
var immediateKinds = map[string]string{
	TypeMachineRegistered: "register-machine",
	TypeMachineRemoved:    "remove-machine",
	TypePackageUploaded:   "upload-package",
}

// summarizedTypes are the events, beyond the immediate ones, that change
// a summary; the others need not be decoded for it.
var summarizedTypes = map[string]bool{
	TypeOperationRequested: true, TypeStepStarted: true, TypeOperationSucceeded: true,
	TypeOperationFailed: true, TypeOperationRetried: true, TypeOperationCancelled: true,
}

// Summarizes reports whether an event of this type changes a summary (so
// that callers decode only those).
func Summarizes(eventType string) bool {
	_, immediate := immediateKinds[eventType]
	return immediate || summarizedTypes[eventType]
}

// Apply folds one event of the operation: its type, and its decoded value
// (nil when it was not decoded or is not one of the summarized types).
func (s OperationSummary) Apply(eventType string, de Event) OperationSummary {
	if kind, ok := immediateKinds[eventType]; ok && s.Kind == "" {
		s.Kind, s.Status = kind, OperationStatusSucceeded
	}
	switch ev := de.(type) {
	case OperationRequested:
		s.Kind, s.Cluster, s.Status, s.Attempt = ev.Kind, ev.Cluster, OperationStatusPending, 1
	case StepStarted:
		s.Status = OperationStatusRunning
	case OperationSucceeded:
		s.Status, s.Error = OperationStatusSucceeded, ""
	case OperationFailed:
		s.Status, s.Error = OperationStatusFailed, ev.Error
	case OperationRetried:
		s.Status, s.Error, s.Attempt = OperationStatusPending, "", ev.Attempt
	case OperationCancelled:
		s.Status = OperationStatusCancelled
	}
	return s
}
