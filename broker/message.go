package broker

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/symphony-go/symphony/tasks"
)

// NewMessage builds the message for a publication. Its UUID doubles as the
// AMQP message id.
func NewMessage(p tasks.Publication) (*message.Message, error) {
	msg := message.NewMessage(watermill.NewUUID(), p.Body)
	msg.Metadata.Set(MetaContentType, p.ContentType)
	msg.Metadata.Set(MetaMessageID, msg.UUID)
	msg.Metadata.Set(MetaTimestamp, time.Now().UTC().Format(time.RFC3339Nano))
	if len(p.Headers) > 0 {
		b, err := json.Marshal(p.Headers)
		if err != nil {
			return nil, fmt.Errorf("encode headers: %w", err)
		}
		msg.Metadata.Set(MetaHeaders, string(b))
	}
	if p.Delay > 0 {
		msg.Metadata.Set(MetaDelay, p.Delay.String())
	}
	if err := tasks.ValidatePriority(p.Priority); err != nil {
		return nil, err
	}
	if p.Priority > 0 {
		msg.Metadata.Set(MetaPriority, strconv.Itoa(p.Priority))
	}
	return msg, nil
}

// Delivery reads a consumed message into the form handlers see. Header
// numbers arrive as json.Number.
func Delivery(msg *message.Message) (*tasks.Delivery, error) {
	md := msg.Metadata
	d := &tasks.Delivery{
		Body:          msg.Payload,
		ContentType:   md.Get(MetaContentType),
		RoutingKey:    md.Get(MetaRoutingKey),
		Exchange:      md.Get(MetaExchange),
		Queue:         md.Get(MetaQueue),
		MessageID:     md.Get(MetaMessageID),
		CorrelationID: md.Get(MetaCorrelationID),
		Redelivered:   md.Get(MetaRedelivered) == "true",
		Attempt:       Attempt(msg),
		Headers:       map[string]any{},
	}
	if d.MessageID == "" {
		d.MessageID = msg.UUID
	}
	if ts := md.Get(MetaTimestamp); ts != "" {
		t, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil {
			return nil, fmt.Errorf("read timestamp %q: %w", ts, err)
		}
		d.Timestamp = t
	}
	if h := md.Get(MetaHeaders); h != "" {
		// Numbers stay json.Number so that integers stay integers.
		dec := json.NewDecoder(strings.NewReader(h))
		dec.UseNumber()
		if err := dec.Decode(&d.Headers); err != nil {
			return nil, fmt.Errorf("read headers: %w", err)
		}
	}
	return d, nil
}

// Attempt is the message's delivery attempt, 1 when it does not say.
func Attempt(msg *message.Message) int {
	n, err := strconv.Atoi(msg.Metadata.Get(MetaAttempt))
	if err != nil || n < 1 {
		return 1
	}
	return n
}

// Delay is the delay a published message asks for, zero when none.
func Delay(msg *message.Message) (time.Duration, error) {
	s := msg.Metadata.Get(MetaDelay)
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("read delay %q: %w", s, err)
	}
	return d, nil
}

// Priority is the priority a message asks for, 0 when none; a value out of
// range is an error.
func Priority(msg *message.Message) (int, error) {
	s := msg.Metadata.Get(MetaPriority)
	if s == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("read priority %q: %w", s, err)
	}
	if err := tasks.ValidatePriority(n); err != nil {
		return 0, err
	}
	return n, nil
}
