package amqp

import "slices"

// DelayNames are the delay exchanges and queues this broker declared (they
// share their names), for the tests' cleanup.
func (b *Broker) DelayNames() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	names := make([]string, 0, len(b.delays))
	for n := range b.delays {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}
