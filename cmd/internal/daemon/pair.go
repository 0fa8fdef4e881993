package daemon

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"tbstream/nhi/emu"
)

// RunPair runs two emulated hosts in this process, joined by an
// in-process cable (emu.ConnectInProcess): a frame crosses by a function
// call from one host's TX slot into the other's RX slot, with no socket,
// shared memory or other process on the way. Each host keeps its own run
// directory, mounts, devices and status socket; the cable is plugged in
// again after an unplug. Both stop when ctx ends: one process, so
// stopping either host (SIGTERM to its pid) stops both.
func RunPair(ctx context.Context, a, b Options) error {
	for _, o := range []Options{a, b} {
		if o.VFIO != "" || o.Listen != "" || o.Connect != "" || o.Cable != nil {
			return fmt.Errorf("host %s: a pair's hosts have only their in-process cable", o.Name)
		}
	}
	da, err := Start(ctx, a)
	if err != nil {
		return err
	}
	db, err := Start(ctx, b)
	if err != nil {
		da.Stop()
		return err
	}
	if da.emu == nil || db.emu == nil {
		da.Stop()
		db.Stop()
		return errors.New("a pair needs two emulated hosts")
	}
	da.wg.Add(1)
	go pairCables(ctx, da, db)
	<-ctx.Done()
	da.log.Info("tbstreamd stopping")
	db.log.Info("tbstreamd stopping")
	var wg sync.WaitGroup
	wg.Go(da.Stop)
	wg.Go(db.Stop)
	wg.Wait()
	return nil
}

// pairCables keeps the in-process cable between a and b plugged in: when
// either end is unplugged (tbstream unplug), both ends go and a new cable
// joins them.
func pairCables(ctx context.Context, a, b *Daemon) {
	defer a.wg.Done()
	for ctx.Err() == nil {
		ca, cb, err := emu.ConnectInProcess(a.emu, a.port(), b.emu, b.port())
		if err != nil {
			// The last cable's ends are still being taken out.
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
			continue
		}
		a.log.Info("cable plugged", "transport", "in process", "peer", b.opts.Name)
		b.log.Info("cable plugged", "transport", "in process", "peer", a.opts.Name)
		a.cable.Store(ca)
		b.cable.Store(cb)
		select {
		case <-ctx.Done():
		case <-ca.Done():
		case <-cb.Done():
		}
		a.cable.CompareAndSwap(ca, nil)
		b.cable.CompareAndSwap(cb, nil)
		ca.Close()
		cb.Close()
		if ctx.Err() == nil {
			a.log.Info("cable unplugged")
			b.log.Info("cable unplugged")
		}
	}
}
