import { makeBusyboxRootfs } from '../../test/helpers/busybox-rootfs.ts';
import { runDriverConformance } from './driver.case.ts';

runDriverConformance({
  name: 'crun',
  factoryModule: new URL('./crun-driver.ts', import.meta.url).href,
  factoryExport: 'createCrunDriver',
  makeRootfs: (parent) => makeBusyboxRootfs(parent),
});
