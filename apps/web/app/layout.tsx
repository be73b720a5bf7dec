import type { Metadata } from 'next';
import type { ReactNode } from 'react';
import { Shell } from './components/shell';
import './globals.css';
import { Providers } from './providers';

export const metadata: Metadata = {
  title: 'vfio-fleet',
  description: 'A fleet console for PCI device passthrough (VFIO)',
};

export default function RootLayout({ children }: { children: ReactNode }) {
  return (
    <html lang="en">
      <body>
        <Providers>
          <Shell>{children}</Shell>
        </Providers>
      </body>
    </html>
  );
}
