import { packageTestConfig } from '@vfio-fleet/vitest-config';

export default packageTestConfig();
