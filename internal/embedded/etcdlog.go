package embedded

import (
	"os"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// EtcdClientLogger is the logger dmgr gives its etcd clients: errors only,
// as JSON on stderr. The client's default logs a warning for every request
// whose context ends (each lease revoked on shutdown, each cancelled
// read), which says nothing dmgr does not log itself.
func EtcdClientLogger() *zap.Logger {
	enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	return zap.New(zapcore.NewCore(enc, zapcore.Lock(os.Stderr), zapcore.ErrorLevel)).Named("etcd-client")
}
