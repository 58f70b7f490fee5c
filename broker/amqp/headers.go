package amqp

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/symphony-go/symphony/broker"
)

// Headers of this package; handlers do not see them (see the package
// documentation).
const (
	ownPrefix   = "x-symphony-"
	hRoutingKey = "x-symphony-routing-key"
	hAttempt    = "x-symphony-attempt"
	// hRedelivered marks a copy that hands a message back (see
	// consumer.handBack): redelivered to its handler, not lost.
	hRedelivered = "x-symphony-redelivered"
	hUUID        = "x-symphony-uuid"
	hTimestamp   = "x-symphony-timestamp"
	hMetadata    = "x-symphony-metadata"
	hDeadID      = "x-symphony-dead-id"
	hDeadTask    = "x-symphony-dead-task"
	hDeadReason  = "x-symphony-dead-reason"
	hDeadError   = "x-symphony-dead-error"
	hDeadAt      = "x-symphony-dead-at"
	hDeadPrefix  = "x-symphony-dead-"
	hXDeath      = "x-death"
	// hDeliveryCount is what quorum queues count deliveries in.
	hDeliveryCount = "x-delivery-count"
	hFirstDeathQ   = "x-first-death-queue"
	hFirstDeathRs  = "x-first-death-reason"
	hFirstDeathEx  = "x-first-death-exchange"
)

// mapped reports the metadata keys that travel as AMQP properties or are
// set on delivery; others travel in the x-symphony-metadata header.
func mapped(key string) bool {
	switch key {
	case broker.MetaRoutingKey, broker.MetaExchange, broker.MetaQueue, broker.MetaRedelivered, broker.MetaDelay,
		broker.MetaContentType, broker.MetaMessageID, broker.MetaCorrelationID, broker.MetaTimestamp,
		broker.MetaAttempt, broker.MetaHeaders, broker.MetaPriority:
		return true
	}
	return false
}

// encode builds the AMQP message for msg: properties from its metadata,
// application headers from broker.MetaHeaders, and this package's own
// headers for what AMQP has no property for.
func encode(msg *message.Message) (amqp.Publishing, error) {
	md := msg.Metadata
	headers := amqp.Table{}
	if h := md.Get(broker.MetaHeaders); h != "" {
		t, err := tableFromJSON(h)
		if err != nil {
			return amqp.Publishing{}, fmt.Errorf("encode headers: %w", err)
		}
		headers = t
	}
	p := amqp.Publishing{
		Headers:       headers,
		ContentType:   md.Get(broker.MetaContentType),
		MessageId:     md.Get(broker.MetaMessageID),
		CorrelationId: md.Get(broker.MetaCorrelationID),
		DeliveryMode:  amqp.Persistent,
		Body:          msg.Payload,
	}
	if p.Body == nil {
		p.Body = []byte{}
	}
	if a := md.Get(broker.MetaAttempt); a != "" {
		if n, err := strconv.ParseInt(a, 10, 64); err == nil {
			headers[hAttempt] = n
		} else {
			headers[hAttempt] = a
		}
	}
	if ts := md.Get(broker.MetaTimestamp); ts != "" {
		t, err := time.Parse(time.RFC3339Nano, ts)
		if err == nil {
			p.Timestamp = t
		}
		// AMQP's timestamp has whole seconds; keep the rest.
		if err != nil || t.Nanosecond() != 0 || t.UTC().Format(time.RFC3339Nano) != ts {
			headers[hTimestamp] = ts
		}
	}
	if pr, err := broker.Priority(msg); err != nil {
		return amqp.Publishing{}, err
	} else if pr > 0 {
		p.Priority = uint8(pr)
	}
	if msg.UUID != p.MessageId {
		headers[hUUID] = msg.UUID
	}
	var extra amqp.Table
	for k, v := range md {
		if !mapped(k) {
			if extra == nil {
				extra = amqp.Table{}
			}
			extra[k] = v
		}
	}
	if extra != nil {
		headers[hMetadata] = extra
	}
	return p, nil
}

// decoded is a delivery as the subscriber and the dead letters read it.
type decoded struct {
	uuid       string
	routingKey string
	rerouted   bool // it travelled through a delay queue or was replayed
	md         message.Metadata
	user       amqp.Table // application headers without ours
}

// decode reads a delivery's properties and headers. It never fails: a
// header it cannot read is shown as it is, so no message is dropped for
// its headers.
func (b *Broker) decode(d *amqp.Delivery) decoded {
	md := message.Metadata{}
	out := decoded{routingKey: d.RoutingKey, md: md}
	if rk, ok := d.Headers[hRoutingKey].(string); ok {
		out.routingKey, out.rerouted = rk, true
	}
	if d.ContentType != "" {
		md[broker.MetaContentType] = d.ContentType
	}
	if d.MessageId != "" {
		md[broker.MetaMessageID] = d.MessageId
	}
	if d.CorrelationId != "" {
		md[broker.MetaCorrelationID] = d.CorrelationId
	}
	if ts, ok := d.Headers[hTimestamp].(string); ok {
		md[broker.MetaTimestamp] = ts
	} else if !d.Timestamp.IsZero() {
		md[broker.MetaTimestamp] = d.Timestamp.UTC().Format(time.RFC3339Nano)
	}
	if d.Priority > 0 {
		md[broker.MetaPriority] = strconv.Itoa(int(d.Priority))
	}
	if a, ok := d.Headers[hAttempt]; ok {
		if n, ok := integer(a); ok {
			md[broker.MetaAttempt] = strconv.FormatInt(n, 10)
		} else if s, ok := a.(string); ok {
			md[broker.MetaAttempt] = s
		}
	}
	if v, _ := d.Headers[hRedelivered].(bool); v {
		md[broker.MetaRedelivered] = "true"
	}
	if extra, ok := d.Headers[hMetadata].(amqp.Table); ok {
		for k, v := range extra {
			if s, ok := v.(string); ok && !mapped(k) {
				md[k] = s
			}
		}
	}
	switch u, _ := d.Headers[hUUID].(string); {
	case u != "":
		out.uuid = u
	case d.MessageId != "":
		out.uuid = d.MessageId
	default:
		out.uuid = watermill.NewUUID()
	}
	out.user = b.userHeaders(d.Headers)
	if len(out.user) > 0 {
		md[broker.MetaHeaders] = tableJSON(out.user)
	}
	return out
}

// userHeaders is headers without this package's own, without the
// x-death entries of its delay queues, and without the delivery count that
// quorum queues add (the attempt is symphony's own; a count that classic
// queues do not keep would make the two types differ).
func (b *Broker) userHeaders(headers amqp.Table) amqp.Table {
	out := amqp.Table{}
	for k, v := range headers {
		if !strings.HasPrefix(k, ownPrefix) && k != hDeliveryCount {
			out[k] = v
		}
	}
	if deaths, ok := out[hXDeath].([]any); ok {
		kept := make([]any, 0, len(deaths))
		for _, e := range deaths {
			if t, ok := e.(amqp.Table); ok {
				if q, _ := t["queue"].(string); b.isDelayQueue(q) {
					continue
				}
			}
			kept = append(kept, e)
		}
		if len(kept) == 0 {
			delete(out, hXDeath)
		} else {
			out[hXDeath] = kept
		}
	}
	if q, _ := out[hFirstDeathQ].(string); b.isDelayQueue(q) {
		delete(out, hFirstDeathQ)
		delete(out, hFirstDeathRs)
		delete(out, hFirstDeathEx)
	}
	return out
}

// integer reads an AMQP integer of any width.
func integer(v any) (int64, bool) {
	switch x := v.(type) {
	case int8:
		return int64(x), true
	case int16:
		return int64(x), true
	case int32:
		return int64(x), true
	case int64:
		return x, true
	case int:
		return int64(x), true
	case uint8:
		return int64(x), true
	case uint16:
		return int64(x), true
	case uint32:
		return int64(x), true
	}
	return 0, false
}

// tableJSON encodes an AMQP table as a JSON object, keeping types (see the
// package documentation).
func tableJSON(t amqp.Table) string {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(jsonValue(t)); err != nil {
		// jsonValue makes only values that encode; keep the message anyway.
		return "{}"
	}
	return strings.TrimSuffix(buf.String(), "\n")
}

// jsonValue converts an AMQP field value to what encoding/json writes
// with the same type.
func jsonValue(v any) any {
	if n, ok := integer(v); ok {
		return json.Number(strconv.FormatInt(n, 10))
	}
	switch x := v.(type) {
	case nil, bool, string:
		return x
	case float32:
		return floatNumber(float64(x), 32)
	case float64:
		return floatNumber(x, 64)
	case []byte:
		if utf8.Valid(x) {
			return string(x)
		}
		return base64.StdEncoding.EncodeToString(x)
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano)
	case amqp.Decimal:
		return decimalNumber(x)
	case amqp.Table:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[k] = jsonValue(e)
		}
		return m
	case map[string]any:
		return jsonValue(amqp.Table(x))
	case []any:
		s := make([]any, len(x))
		for i, e := range x {
			s[i] = jsonValue(e)
		}
		return s
	}
	return fmt.Sprint(v)
}

// floatNumber writes a float so that it reads back as a float: with a
// fraction or an exponent. JSON has no NaN or infinities; they become
// strings.
func floatNumber(f float64, bits int) any {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return strconv.FormatFloat(f, 'g', -1, bits)
	}
	s := strconv.FormatFloat(f, 'g', -1, bits)
	if !strings.ContainsAny(s, ".eE") {
		s += ".0"
	}
	return json.Number(s)
}

// decimalNumber writes an AMQP decimal (value × 10^-scale) exactly.
func decimalNumber(d amqp.Decimal) json.Number {
	if d.Scale == 0 {
		return json.Number(strconv.FormatInt(int64(d.Value), 10))
	}
	r := new(big.Rat).SetFrac(big.NewInt(int64(d.Value)), new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(d.Scale)), nil))
	return json.Number(r.FloatString(int(d.Scale)))
}

// tableFromJSON decodes a JSON object of headers into an AMQP table.
func tableFromJSON(s string) (amqp.Table, error) {
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("headers are a JSON %T, not an object", v)
	}
	return fieldValue(m).(amqp.Table), nil
}

// fieldValue converts decoded JSON to AMQP field values: integers to
// int64 (AMQP long), other numbers to float64 (double), objects to tables.
func fieldValue(v any) any {
	switch x := v.(type) {
	case json.Number:
		s := x.String()
		if !strings.ContainsAny(s, ".eE") {
			if n, err := strconv.ParseInt(s, 10, 64); err == nil {
				return n
			}
		}
		f, _ := strconv.ParseFloat(s, 64)
		return f
	case map[string]any:
		t := make(amqp.Table, len(x))
		for k, e := range x {
			t[k] = fieldValue(e)
		}
		return t
	case []any:
		s := make([]any, len(x))
		for i, e := range x {
			s[i] = fieldValue(e)
		}
		return s
	}
	return v
}

// headersMap is a table as broker.DeadLetter carries headers: decoded JSON
// with numbers as json.Number, like the embedded broker.
func headersMap(t amqp.Table) map[string]any {
	out := map[string]any{}
	if len(t) == 0 {
		return out
	}
	dec := json.NewDecoder(strings.NewReader(tableJSON(t)))
	dec.UseNumber()
	_ = dec.Decode(&out)
	return out
}

// propertiesSize is about how many bytes the AMQP content header of p
// takes (its properties, headers included): RabbitMQ closes the whole
// connection when it exceeds the frame size, so Publish refuses such a
// message instead. It errs on the large side.
func propertiesSize(p *amqp.Publishing) int {
	n := 64 + len(p.ContentType) + len(p.ContentEncoding) + len(p.CorrelationId) + len(p.ReplyTo) +
		len(p.Expiration) + len(p.MessageId) + len(p.Type) + len(p.UserId) + len(p.AppId)
	return n + fieldSize(p.Headers)
}

func fieldSize(v any) int {
	switch x := v.(type) {
	case string:
		return 5 + len(x)
	case []byte:
		return 5 + len(x)
	case amqp.Table:
		n := 5
		for k, e := range x {
			n += 1 + len(k) + fieldSize(e)
		}
		return n
	case []any:
		n := 5
		for _, e := range x {
			n += fieldSize(e)
		}
		return n
	}
	return 9 // the widest scalar: a type byte and 8 bytes
}
