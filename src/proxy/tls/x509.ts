// @peculiar/x509 needs the Reflect metadata API loaded before it; importing it through this
// file keeps that order in one place.
import 'reflect-metadata';

export * from '@peculiar/x509';
