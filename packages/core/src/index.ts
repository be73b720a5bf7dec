export * from './errors';
export * from './inventory/schema';
export * from './kernel/kernel-io';
export * from './kmod/alias-index';
export * from './kmod/fnmatch';
export * from './kmod/modules-alias';
export * from './pci/address';
export * from './pci/class-names';
export * from './pci/modalias';
export * from './pci/pci-ids';
export * from './plan/plan-rebind';
export * from './plan/restore-expect';
export * from './plan/schema';
export * from './protocol/delta';
export * from './protocol/messages';
export * from './readiness/assess';
export {
  MAX_NAMED_DEVICES,
  MAX_REASON_TEXT,
  MAX_RELATED_DEVICES,
} from './readiness/bounded-text';
export * from './readiness/delta-scope';
export * from './readiness/holder';
export * from './readiness/kept-by';
export * from './readiness/rules';
export * from './readiness/unreadable';
export * from './vfio/select-variant';
