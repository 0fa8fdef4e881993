package configfs

import (
	"context"
	"sort"
	"sync"
)

// MemBackend is a Backend holding streams in memory: the kernel's defaults (ring_size 256,
// throttling 8192, HopIDs 0, busy_poll 0) and index allocation (lowest free, from 0, freed
// at rmdir), but no peer. Like a stream whose peer is not connected, it stores HopIDs as
// written. InjectFault makes it refuse as a real backend would (EBUSY while open, ENOSPC,
// ...). Tests, demos and development use it; the daemon implements Backend itself.
type MemBackend struct {
	mu      sync.Mutex
	groups  map[string]*memGroup
	indexes map[int64]bool
	fault   func(Op) error
}

// Op describes a backend call to a fault injected with InjectFault.
type Op struct {
	Kind  OpKind
	Group string // group name
	Item  string // item name; "" for group operations
	Attr  Attr   // OpShow and OpStore
	Value int64  // OpStore
}

// OpKind says which backend call an Op is.
type OpKind string

// The backend calls.
const (
	OpMakeGroup   OpKind = "make group"
	OpRemoveGroup OpKind = "remove group"
	OpMakeItem    OpKind = "make item"
	OpRemoveItem  OpKind = "remove item"
	OpShow        OpKind = "show"
	OpStore       OpKind = "store"
)

type memGroup struct {
	b     *MemBackend
	name  string
	items map[string]*memItem
}

type memItem struct {
	g      *memGroup
	name   string
	values [numAttrs]int64
}

var (
	_ Backend = (*MemBackend)(nil)
	_ Group   = (*memGroup)(nil)
	_ Item    = (*memItem)(nil)
)

// NewMemBackend returns an empty MemBackend.
func NewMemBackend() *MemBackend {
	return &MemBackend{groups: map[string]*memGroup{}, indexes: map[int64]bool{}}
}

// InjectFault makes every later call consult fault first; a non-nil error is returned as
// the call's result and the call does nothing else. nil removes the fault.
func (b *MemBackend) InjectFault(fault func(Op) error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.fault = fault
}

// Groups returns each group's name with the sorted names of its items.
func (b *MemBackend) Groups() map[string][]string {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := map[string][]string{}
	for name, g := range b.groups {
		items := []string{}
		for item := range g.items {
			items = append(items, item)
		}
		sort.Strings(items)
		out[name] = items
	}
	return out
}

// Value returns an item's attribute value.
func (b *MemBackend) Value(group, item string, attr Attr) (int64, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	g := b.groups[group]
	if g == nil || g.items[item] == nil || attr < 0 || attr >= numAttrs {
		return 0, false
	}
	return g.items[item].values[attr], true
}

// check runs the injected fault. Caller holds b.mu.
func (b *MemBackend) check(op Op) error {
	if b.fault == nil {
		return nil
	}
	return b.fault(op)
}

// MakeGroup implements Backend.
func (b *MemBackend) MakeGroup(ctx context.Context, name GroupName) (Group, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.check(Op{Kind: OpMakeGroup, Group: name.Name}); err != nil {
		return nil, err
	}
	g := &memGroup{b: b, name: name.Name, items: map[string]*memItem{}}
	b.groups[name.Name] = g
	return g, nil
}

func (g *memGroup) MakeItem(ctx context.Context, name string) (Item, error) {
	b := g.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.check(Op{Kind: OpMakeItem, Group: g.name, Item: name}); err != nil {
		return nil, err
	}
	it := &memItem{g: g, name: name}
	index := int64(0)
	for b.indexes[index] {
		index++
	}
	b.indexes[index] = true
	it.values[AttrIndex] = index
	it.values[AttrRingSize] = DefaultRingSize
	it.values[AttrThrottling] = DefaultThrottling
	g.items[name] = it
	return it, nil
}

func (g *memGroup) Remove(ctx context.Context) error {
	b := g.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.check(Op{Kind: OpRemoveGroup, Group: g.name}); err != nil {
		return err
	}
	delete(b.groups, g.name)
	return nil
}

func (it *memItem) Show(ctx context.Context, attr Attr) (int64, error) {
	b := it.g.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.check(Op{Kind: OpShow, Group: it.g.name, Item: it.name, Attr: attr}); err != nil {
		return 0, err
	}
	return it.values[attr], nil
}

func (it *memItem) Store(ctx context.Context, attr Attr, value int64) error {
	b := it.g.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.check(Op{Kind: OpStore, Group: it.g.name, Item: it.name, Attr: attr, Value: value}); err != nil {
		return err
	}
	it.values[attr] = value
	return nil
}

func (it *memItem) Remove(ctx context.Context) error {
	b := it.g.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.check(Op{Kind: OpRemoveItem, Group: it.g.name, Item: it.name}); err != nil {
		return err
	}
	delete(b.indexes, it.values[AttrIndex])
	delete(it.g.items, it.name)
	return nil
}
