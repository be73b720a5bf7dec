import type { Metadata } from 'next';
import type { ReactNode } from 'react';
import { Shell } from './components/shell';
import './globals.css';
import { Providers } from './providers';

/**
 * Rendered per request, never prerendered: each page's scripts carry the nonce of its request's
 * Content-Security-Policy (src/security-headers.ts), which a page built ahead of time cannot know.
 */
export const dynamic = 'force-dynamic';

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
