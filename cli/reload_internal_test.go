package cli

import (
	"strings"
	"testing"
)

// A broker URL that differs only in its password is another broker
// setting: refused live, and said without the password.
func TestFixedSettingsSeeABrokerPasswordChange(t *testing.T) {
	t.Parallel()
	was := settings{Broker: "amqp://app:old-secret@rabbit:5672/"}
	now := settings{Broker: "amqp://app:new-secret@rabbit:5672/"}
	err := fixedSettings(was, now, nil)
	if err == nil {
		t.Fatal("a new broker password was taken live")
	}
	for _, secret := range []string{"old-secret", "new-secret"} {
		if strings.Contains(err.Error(), secret) {
			t.Errorf("the error shows a password: %v", err)
		}
	}
	if !strings.Contains(err.Error(), "broker cannot change") || !strings.Contains(err.Error(), "another password") {
		t.Errorf("the error: %v", err)
	}
	if err := fixedSettings(was, was, nil); err != nil {
		t.Errorf("the same settings: %v", err)
	}
}
